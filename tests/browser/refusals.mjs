// What the dashboard refuses, each its own flow: a taken username and a weak password at
// sign-up, a wrong password at log-in, forms posted without (or with a wrong) CSRF token,
// another account's cache (answered exactly like a missing one), deleting a path that
// other paths reference; and a sign-up done with the keyboard only.

import { audit, check, env, expectPath, fail, mainText, newPage, nixOk, pathOf, run, text } from './lib.mjs';
import {
    PASSWORD,
    createCache,
    expectLoggedIn,
    expectStatus,
    field,
    fillNewCache,
    fillSignUp,
    follow,
    hashOf,
    heading,
    logIn,
    pushThroughUi,
    signUp,
    storeBase,
    submit,
    visit,
} from './flows.mjs';

const OWNER = 'refusal-owner';
const INTRUDER = 'refusal-intruder';
const PRIVATE = 'owner-private';
const PUBLIC = 'owner-public';
const MISSING = 'owner-missing';

/** The field error of the input labelled `label` (p.field-error#<input id>-error), checked
 *  to be tied to the input with aria-invalid and aria-describedby; returns its text. */
async function fieldError(page, label) {
    const input = field(page, label);
    check((await input.count()) === 1, `no input "${label}" on ${page.url()}`);
    const id = await input.getAttribute('id');
    check(id, `the input "${label}" has no id`);
    const error = page.locator(`p.field-error#${id}-error`);
    check((await error.count()) === 1, `no p.field-error#${id}-error next to "${label}" on ${page.url()}: ${(await mainText(page)).slice(0, 400)}`);
    check((await input.getAttribute('aria-invalid')) === 'true', `"${label}" has no aria-invalid="true" while its error shows`);
    const describedBy = ((await input.getAttribute('aria-describedby')) || '').split(/\s+/);
    check(describedBy.includes(`${id}-error`), `"${label}"'s aria-describedby (${describedBy.join(' ')}) does not name ${id}-error`);
    return ((await error.textContent()) || '').trim();
}

async function formError(page) {
    const error = page.locator('div.form-error[role="alert"]');
    check((await error.count()) === 1, `no div.form-error[role=alert] on ${page.url()}: ${(await mainText(page)).slice(0, 400)}`);
    return ((await error.textContent()) || '').trim();
}

async function expectAnonymous(page, what) {
    check((await page.getByRole('button', { name: 'Log out', exact: true }).count()) === 0, `${what}: the page shows a "Log out" button (logged in)`);
}

/** Status and body text of GET `urlPath`, with `name` replaced by NAME in the text (a page
 *  may echo the name it was asked for without telling whether it exists). */
async function answerOf(page, urlPath, name) {
    const response = await visit(page, urlPath);
    const body = (await page.locator('body').innerText()).replace(/\s+/g, ' ').trim().split(name).join('NAME');
    return { status: response.status(), body, title: (await page.title()).split(name).join('NAME') };
}

/** The fields (name/value pairs, as the browser would send them) and action of the form
 *  holding the button named `buttonName`. */
async function formOf(page, buttonName) {
    const button = page.getByRole('button', { name: buttonName, exact: true });
    check((await button.count()) === 1, `no button "${buttonName}" on ${page.url()}`);
    return button.evaluate((b) => ({
        action: new URL(b.form.getAttribute('action') || window.location.pathname, window.location.href).pathname,
        fields: [...new FormData(b.form).entries()].filter(([, v]) => typeof v === 'string'),
    }));
}

/** Replaces (or with `undefined` removes) the csrf field of `fields`. */
function withCsrf(fields, csrf) {
    const rest = fields.filter(([k]) => k !== 'csrf');
    return csrf === undefined ? rest : [...rest, ['csrf', csrf]];
}

/** POSTs form fields from inside the page (its cookies, same origin), as a script of the
 *  page could; returns the status without following redirects. */
async function postFromPage(page, urlPath, fields) {
    return page.evaluate(
        async ({ urlPath, fields }) => {
            const response = await fetch(urlPath, {
                method: 'POST',
                body: new URLSearchParams(fields),
                credentials: 'same-origin',
                redirect: 'manual',
            });
            return { status: response.status, type: response.type, text: await response.text() };
        },
        { urlPath, fields },
    );
}

await run('refusals', async ({ browser, step, watch }) => {
    const storePath = env('LARDER_STORE_PATH');
    const owner = watch(await newPage(browser));
    let closure;

    await step(`${OWNER} signs up and creates ${PRIVATE} (private) and ${PUBLIC} (public)`, async () => {
        await signUp(owner, OWNER);
        await createCache(owner, PRIVATE, { visibility: 'Private' });
        await createCache(owner, PUBLIC, { visibility: 'Public' });
    });

    await step(`push the closure into ${PRIVATE} with a write token from the tokens page`, async () => {
        ({ closure } = await pushThroughUi(owner, PRIVATE));
        await visit(owner, `/caches/${PRIVATE}`);
        check((await text(owner, 'dd#usage-paths')) === String(closure.length), `dd#usage-paths is not ${closure.length} after the push`);
    });

    // ---- another account's cache answers exactly like a missing one

    const intruder = watch(await newPage(browser));
    await step(`${INTRUDER} signs up in another browser context`, async () => {
        await signUp(intruder, INTRUDER);
        check((await intruder.locator('table#caches tr:has(td)').count()) === 0, `${INTRUDER}'s list shows caches`);
    });

    await step("another account's cache answers exactly like a missing one (404, same text)", async () => {
        for (const [cache, sub] of [
            [PRIVATE, ''],
            [PUBLIC, ''],
            [PRIVATE, '/paths'],
            [PRIVATE, `/paths/${hashOf(storePath)}`],
            [PRIVATE, '/tokens'],
            [PRIVATE, '/keys'],
            [PRIVATE, '/settings'],
        ]) {
            const theirs = await answerOf(intruder, `/caches/${cache}${sub}`, cache);
            const missing = await answerOf(intruder, `/caches/${MISSING}${sub}`, MISSING);
            check(missing.status === 404, `GET /caches/${MISSING}${sub} (missing) answered ${missing.status}, not 404`);
            check(theirs.status === missing.status, `GET /caches/${cache}${sub} of another account answered ${theirs.status}, a missing cache ${missing.status}`);
            if (theirs.body !== missing.body || theirs.title !== missing.title) {
                fail(`GET /caches/${cache}${sub} of another account differs from a missing cache's:\n  theirs:  ${theirs.title} | ${theirs.body.slice(0, 600)}\n  missing: ${missing.title} | ${missing.body.slice(0, 600)}`);
            }
        }
        await visit(intruder, `/caches/${MISSING}`);
        check((await heading(intruder)) === 'Not found', `the 404 page's h1 is ${JSON.stringify(await heading(intruder))}`);
        await audit(intruder, 'not-found');
    });

    await step("a POST to another account's cache (with the intruder's own CSRF token) is 404 and changes nothing", async () => {
        // The owner's own forms, as an intruder who knows the field names would send them.
        await visit(owner, `/caches/${PRIVATE}/settings`);
        await field(owner, 'Type the cache name to confirm').fill(PRIVATE);
        const deleteForm = await formOf(owner, 'Delete cache');
        await visit(owner, `/caches/${PRIVATE}/tokens`);
        await field(owner, 'Permission').selectOption('admin');
        await field(owner, 'Description').fill('stolen');
        const tokenForm = await formOf(owner, 'Create token');
        await visit(intruder, '/caches/new');
        const csrf = await intruder.locator('input[name="csrf"]').first().getAttribute('value');
        check(csrf, "no csrf value in the intruder's new cache form");
        for (const form of [deleteForm, tokenForm]) {
            const answer = await postFromPage(intruder, form.action, withCsrf(form.fields, csrf));
            check(answer.status === 404, `POST ${form.action} from another account (its own csrf) answered ${answer.status}, not 404`);
        }
        const response = await visit(owner, `/caches/${PRIVATE}`);
        await expectStatus(response, 200, `${PRIVATE} after the intruder's POSTs`);
        await visit(owner, `/caches/${PRIVATE}/tokens`);
        check((await owner.locator('table#tokens').getByText('stolen').count()) === 0, 'the intruder made a token');
    });

    // ---- forms without a valid CSRF token

    await step('a form posted without its csrf input gets the 403 "Form expired" page; no cache is made', async () => {
        await visit(owner, '/caches/new');
        await fillNewCache(owner, 'no-csrf-cache', { visibility: 'Public' });
        const removed = await owner.evaluate(() => {
            const inputs = document.querySelectorAll('form input[name="csrf"]');
            inputs.forEach((i) => i.remove());
            return inputs.length;
        });
        check(removed >= 1, 'the new cache form has no csrf input to remove');
        const response = await submit(owner, 'Create cache');
        await expectStatus(response, 403, 'the new cache form without csrf');
        check((await heading(owner)) === 'Form expired', `the 403 page's h1 is ${JSON.stringify(await heading(owner))}`);
        await audit(owner, 'form-expired');
        const cache = await visit(owner, '/caches/no-csrf-cache');
        await expectStatus(cache, 404, 'the cache posted without csrf');
        await visit(owner, '/caches');
        check((await owner.locator('table#caches').getByText('no-csrf-cache').count()) === 0, 'the caches list shows the cache posted without csrf');
    });

    await step('the same form posted by a fetch with the session cookie but no or a wrong csrf is 403; nothing changes', async () => {
        await visit(owner, '/caches/new');
        await fillNewCache(owner, 'fetched-cache', { visibility: 'Public' });
        const form = await formOf(owner, 'Create cache');
        const csrf = form.fields.find(([k]) => k === 'csrf')?.[1];
        check(csrf, 'the new cache form sends no csrf field');
        const wrong = csrf.endsWith('AAAA') ? `${csrf.slice(0, -4)}BBBB` : `${csrf.slice(0, -4)}AAAA`;
        for (const [what, value] of [
            ['no csrf', undefined],
            ['an empty csrf', ''],
            ['a wrong csrf', wrong],
        ]) {
            const answer = await postFromPage(owner, form.action, withCsrf(form.fields, value));
            check(answer.status === 403, `POST ${form.action} with ${what} answered ${answer.status}, not 403`);
            check(answer.text.includes('Form expired'), `POST ${form.action} with ${what}: the answer does not say "Form expired"`);
        }
        const cache = await visit(owner, '/caches/fetched-cache');
        await expectStatus(cache, 404, 'the cache posted by fetch without a valid csrf');
        // Logging out needs the token too.
        const logoutForm = await formOf(owner, 'Log out');
        const logout = await postFromPage(owner, logoutForm.action, withCsrf(logoutForm.fields, undefined));
        check(logout.status === 403, `POST /logout without csrf answered ${logout.status}, not 403`);
        await visit(owner, '/caches');
        await expectLoggedIn(owner, OWNER);
    });

    // ---- sign-up and log-in refusals

    const anon = watch(await newPage(browser));
    await step('sign-up with a taken username is refused next to the field', async () => {
        const response = await fillSignUp(anon, { username: OWNER, email: 'someone-else@example.com', password: 'An0ther-Long-Secret-Phrase' });
        check(response.status() < 500, `sign-up with a taken name answered ${response.status()}`);
        expectPath(anon, '/signup', 'sign-up with a taken name');
        const message = await fieldError(anon, 'Username');
        check(message.includes('already taken'), `#username-error does not say "already taken": ${JSON.stringify(message)}`);
        await expectAnonymous(anon, 'after a refused sign-up');
        await audit(anon, 'signup-errors');
    });

    await step('sign-up with a weak password is refused next to the field, and makes no account', async () => {
        await fillSignUp(anon, { username: 'weak-sign-up', email: 'weak@example.com', password: 'short' });
        expectPath(anon, '/signup', 'sign-up with a weak password');
        const message = await fieldError(anon, 'Password');
        check(message.length > 0, '#password-error is empty');
        check((await field(anon, 'Password').inputValue()) === '', 'the password is sent back in the form');
        await expectAnonymous(anon, 'after a weak password');
        const login = await logIn(anon, 'weak-sign-up', 'short');
        check(login.status() < 500, `logging in as the refused account answered ${login.status()}`);
        await expectAnonymous(anon, 'logging in as the refused sign-up');
    });

    await step('log-in with a wrong password (and an unknown user) says "Wrong username or password"', async () => {
        await logIn(anon, OWNER, 'Not-The-Right-Password-1');
        expectPath(anon, '/login', 'a wrong password');
        const message = await formError(anon);
        check(message.includes('Wrong username or password'), `the form error is ${JSON.stringify(message)}`);
        await expectAnonymous(anon, 'after a wrong password');
        await audit(anon, 'login-error');
        const wrong = await mainText(anon);
        await logIn(anon, 'nobody-here', 'Not-The-Right-Password-1');
        const unknown = await mainText(anon);
        check(wrong.split(OWNER).join('NAME') === unknown.split('nobody-here').join('NAME'), `a wrong password and an unknown user answer differently:\n  ${wrong}\n  ${unknown}`);
        await logIn(anon, OWNER, PASSWORD);
        expectPath(anon, '/caches', 'the right password after a wrong one');
    });

    // ---- keyboard only

    await step('sign up with the keyboard only (Tab, typing, Enter)', async () => {
        const kb = watch(await newPage(browser));
        await visit(kb, '/signup');
        const active = () =>
            kb.evaluate(() => {
                const el = document.activeElement;
                if (!el || el === document.body) return { tag: 'body' };
                const label = el.labels && el.labels[0] ? el.labels[0].textContent.trim() : null;
                return { tag: el.tagName.toLowerCase(), text: el.textContent.trim(), label, inMain: !!el.closest('main') };
            });
        await kb.keyboard.press('Tab');
        const first = await active();
        check(first.tag === 'a' && first.text === 'Skip to content', `the first Tab lands on ${JSON.stringify(first)}, not the "Skip to content" link`);
        await kb.keyboard.press('Enter');
        await kb.keyboard.press('Tab');
        const afterSkip = await active();
        check(afterSkip.inMain, `after "Skip to content", Tab lands outside main: ${JSON.stringify(afterSkip)}`);
        const tabTo = async (label) => {
            for (let i = 0; i < 25; i += 1) {
                if ((await active()).label === label) return;
                await kb.keyboard.press('Tab');
            }
            fail(`Tab never reached the "${label}" field`);
        };
        await tabTo('Username');
        await kb.keyboard.type('keyboard-user');
        await kb.keyboard.press('Tab');
        check((await active()).label === 'Email', `Tab from Username lands on ${JSON.stringify(await active())}, not Email`);
        await kb.keyboard.type('keyboard@example.com');
        await kb.keyboard.press('Tab');
        check((await active()).label === 'Password', `Tab from Email lands on ${JSON.stringify(await active())}, not Password`);
        await kb.keyboard.type(PASSWORD);
        await Promise.all([kb.waitForNavigation({ waitUntil: 'load' }), kb.keyboard.press('Enter')]);
        if (pathOf(kb) !== '/caches') fail(`Enter in the password field led to ${kb.url()}: ${(await mainText(kb)).slice(0, 400)}`);
        await expectLoggedIn(kb, 'keyboard-user');
    });

    // ---- deleting paths

    await step('deleting a path that other paths reference is refused with the message', async () => {
        const refs = (await nixOk('nix-store', ['-q', '--references', storePath])).stdout.split('\n').filter((p) => p && p !== storePath);
        check(refs.length >= 1, `${storePath} references nothing else`);
        const dependency = refs[0];
        await visit(owner, `/caches/${PRIVATE}/paths`);
        await follow(owner, storeBase(dependency), owner.locator('table#paths'));
        expectPath(owner, `/caches/${PRIVATE}/paths/${hashOf(dependency)}`, 'the dependency\'s link');
        const response = await submit(owner, 'Delete path');
        check(response.status() < 500, `deleting a referenced path answered ${response.status()}`);
        // The path's page again: at its own URL, or as the answer to the POST.
        const detail = `/caches/${PRIVATE}/paths/${hashOf(dependency)}`;
        check([detail, `${detail}/delete`].includes(pathOf(owner)), `the refused delete leads to ${owner.url()}, not the path's page`);
        check((await owner.locator('dl#path-info').count()) === 1, 'the refused delete does not show the path (no dl#path-info)');
        const message = await formError(owner);
        await audit(owner, 'path-delete-refused');
        check(message.includes('referenced by'), `the refusal's div.form-error does not say "referenced by" (the page contract's words): ${JSON.stringify(message)}`);
        await visit(owner, `/caches/${PRIVATE}/paths`);
        check((await owner.locator('table#paths tr:has(td)').count()) === closure.length, 'a path went missing after a refused delete');
    });

    await step('deleting the top path (referenced by nobody) works → paths list with a flash', async () => {
        await visit(owner, `/caches/${PRIVATE}/paths/${hashOf(storePath)}`);
        await submit(owner, 'Delete path');
        expectPath(owner, `/caches/${PRIVATE}/paths`, 'deleting the top path');
        check((await owner.locator('p.flash[role="status"]').count()) === 1, 'no p.flash[role=status] after deleting a path');
        check((await owner.locator('table#paths tr:has(td)').count()) === closure.length - 1, `table#paths does not have ${closure.length - 1} rows after the delete`);
        check((await owner.locator('table#paths').getByRole('link', { name: storeBase(storePath), exact: true }).count()) === 0, 'the deleted path is still listed');
        const gone = await visit(owner, `/caches/${PRIVATE}/paths/${hashOf(storePath)}`);
        await expectStatus(gone, 404, 'the deleted path\'s page');
        await visit(owner, `/caches/${PRIVATE}`);
        check((await text(owner, 'dd#usage-paths')) === String(closure.length - 1), `dd#usage-paths is not ${closure.length - 1} after the delete`);
    });
});
