// The main journey, through the dashboard only, with the real nix client:
// sign up → private cache → write token → nix copy --to (netrc line as shown) → usage on
// the overview → read token → substitute into a fresh store with the nix.conf snippet as
// shown → revoke the read token (confirmation page) → the same substitution is refused.
// On the way every page is audited (screenshots at 1280 and 375 px, axe-core).

import { audit, check, closureOf, env, expectPath, fail, freshStore, newPage, nix, parseSize, pathOf, run, tail, text, texts } from './lib.mjs';
import {
    PASSWORD,
    createCache,
    createToken,
    expectLoggedIn,
    expectStatus,
    field,
    follow,
    hashOf,
    heading,
    inStore,
    logIn,
    netrcText,
    openTab,
    pushClosure,
    signUp,
    storeBase,
    submit,
    substituterOf,
    tokenRow,
    visit,
} from './flows.mjs';

const USER = 'journey-user';
const PRIVATE = 'journey-private';
const PUBLIC = 'journey-public';
const CLIENT = 'journey-client';

await run('journey', async ({ browser, step, watch }) => {
    const storePath = env('LARDER_STORE_PATH');
    const page = watch(await newPage(browser));
    let closure;
    let substituter;
    let write;
    let read;

    await step('the closure to push is in the local store', async () => {
        closure = await closureOf(storePath);
        check(closure.length >= 2 && closure.includes(storePath), `nix-store -qR ${storePath} gave ${closure.length} paths`);
    });

    await step('landing page (anonymous) links to sign-up and log-in', async () => {
        const response = await visit(page, '/');
        await expectStatus(response, 200, 'GET /');
        check((await heading(page)) === 'Larder', `landing h1 is ${JSON.stringify(await heading(page))}`);
        const first = await page.evaluate(() => {
            const el = document.body.querySelector('a, button, input, select, textarea, [tabindex]');
            return el ? { text: el.textContent.trim(), href: el.getAttribute('href') } : null;
        });
        check(first && first.text === 'Skip to content' && first.href === '#main', `the first focusable element is not a "Skip to content" link to #main: ${JSON.stringify(first)}`);
        check((await page.locator('main#main').count()) === 1, 'no <main id="main">');
        for (const [name, href] of [['Sign up', '/signup'], ['Log in', '/login']]) {
            const links = page.locator('main').getByRole('link', { name, exact: true });
            check((await links.count()) >= 1, `landing has no link "${name}" in main`);
            check((await links.first().getAttribute('href')) === href, `landing's "${name}" does not link to ${href}`);
        }
        await audit(page, 'landing');
    });

    await step('sign-up page', async () => {
        await follow(page, 'Sign up', page.locator('main'));
        expectPath(page, '/signup', 'landing → "Sign up"');
        check((await page.locator('form[method="post" i] input[type="hidden"][name="csrf"]').count()) === 1, 'the sign-up form has no hidden csrf input');
        await audit(page, 'signup');
    });

    await step('sign up → /caches, logged in, empty list', async () => {
        await signUp(page, USER);
        check((await page.locator('main p.empty').count()) === 1, 'the caches list of a new account shows no p.empty');
        const cookies = await page.context().cookies();
        const session = cookies.find((c) => c.name === 'larder_session');
        check(session, `no larder_session cookie after sign-up (cookies: ${cookies.map((c) => c.name).join(', ')})`);
        check(session.httpOnly && session.sameSite === 'Lax', `larder_session is not HttpOnly; SameSite=Lax: ${JSON.stringify(session)}`);
        await audit(page, 'caches-empty');
    });

    await step('new cache page', async () => {
        await follow(page, 'New cache');
        expectPath(page, '/caches/new', '"New cache"');
        const visibility = page.getByRole('group', { name: 'Visibility' });
        check(await visibility.getByRole('radio', { name: 'Private', exact: true }).isChecked(), 'Private is not the default visibility');
        const signing = page.getByRole('group', { name: 'Signing keys' });
        check(await signing.getByRole('radio', { name: 'Server-held', exact: true }).isChecked(), 'Server-held is not the default signing');
        check((await field(page, 'Priority').getAttribute('type')) === 'number', 'Priority is not a number input');
        await audit(page, 'cache-new');
    });

    await step(`create private cache ${PRIVATE} → its overview`, async () => {
        await createCache(page, PRIVATE, { visibility: 'Private', description: 'Built by the browser journey' });
        substituter = await substituterOf(page);
        check(substituter.replace(/\/+$/, '').endsWith(`/${PRIVATE}`), `code#substituter ${substituter} does not name the cache`);
        const keys = await texts(page, 'code.public-key');
        check(keys.length === 1 && keys[0].startsWith(`${PRIVATE}`), `expected one code.public-key "${PRIVATE}…:…", got ${JSON.stringify(keys)}`);
        const conf = await text(page, 'pre#snippet-nix-conf');
        check(conf.includes(substituter) && conf.includes(keys[0]), `pre#snippet-nix-conf names neither the substituter nor the key:\n${conf}`);
        for (const id of ['snippet-nix-conf', 'snippet-nixos', 'snippet-flake', 'snippet-netrc', 'snippet-push', 'snippet-offline']) {
            check((await page.locator(`pre#${id}`).count()) === 1, `the private cache's overview has no pre#${id}`);
            check((await page.locator(`button[data-copy="${id}"]`).count()) === 1, `no button[data-copy="${id}"] for pre#${id}`);
        }
        check((await text(page, 'pre#snippet-netrc')).includes('YOUR_TOKEN'), 'pre#snippet-netrc does not show the placeholder YOUR_TOKEN');
        check((await text(page, 'dd#usage-paths')) === '0', `dd#usage-paths of an empty cache is ${await text(page, 'dd#usage-paths')}`);
        const tabs = await page.getByRole('navigation', { name: 'Cache', exact: true }).getByRole('link').allTextContents();
        const tabNames = tabs.map((t) => t.trim());
        for (const tab of ['Overview', 'Paths', 'Tokens', 'Keys', 'Settings']) {
            check(tabNames.includes(tab), `the cache's tabs have no "${tab}": ${JSON.stringify(tabNames)}`);
        }
        await audit(page, 'cache-overview-private-empty');
    });

    await step('tokens page: create a write token (netrc line and push command shown once)', async () => {
        await openTab(page, 'Tokens');
        expectPath(page, `/caches/${PRIVATE}/tokens`, 'tab "Tokens"');
        write = await createToken(page, PRIVATE, { permission: 'write', description: 'journey push' });
        check(write.push !== null, 'a write token has no pre#new-token-push');
        await audit(page, 'tokens-new-token');
    });

    await step('push the closure with nix copy --to and the netrc line as shown', async () => {
        await pushClosure(substituter, storePath, write.netrc);
    });

    await step('the overview counts the pushed paths and their size', async () => {
        await visit(page, `/caches/${PRIVATE}`);
        const paths = await text(page, 'dd#usage-paths');
        check(paths === String(closure.length), `dd#usage-paths is ${JSON.stringify(paths)}, the closure has ${closure.length} paths`);
        const stored = await text(page, 'dd#usage-stored');
        const bytes = parseSize(stored);
        check(bytes > 0, `dd#usage-stored is ${JSON.stringify(stored)}, not a non-zero size`);
        const recent = (await texts(page, 'table#recent-pushes')).join(' ');
        check(recent.includes(storeBase(storePath)), `table#recent-pushes does not list ${storePath}:\n${recent.slice(0, 800)}`);
        await audit(page, 'cache-overview-private');
    });

    await step('paths list shows the closure; search finds the top path', async () => {
        await openTab(page, 'Paths');
        expectPath(page, `/caches/${PRIVATE}/paths`, 'tab "Paths"');
        const rows = page.locator('table#paths tr:has(td)');
        check((await rows.count()) === closure.length, `table#paths has ${await rows.count()} rows, the closure ${closure.length}`);
        for (const p of closure) {
            const link = page.locator('table#paths').getByRole('link', { name: storeBase(p), exact: true });
            check((await link.count()) === 1, `table#paths has no link "${storeBase(p)}"`);
            check((await link.getAttribute('href')).endsWith(`/caches/${PRIVATE}/paths/${hashOf(p)}`), `the link of ${storeBase(p)} goes to ${await link.getAttribute('href')}`);
        }
        await audit(page, 'paths');
        await field(page, 'Search paths').fill(storeBase(storePath).slice(33));
        await submit(page, 'Search');
        const found = await page.locator('table#paths tr:has(td)').count();
        check(found >= 1 && found < closure.length, `searching the top path's name gave ${found} rows`);
        check((await page.locator('table#paths').getByRole('link', { name: storeBase(storePath), exact: true }).count()) === 1, 'the search does not list the top path');
        await field(page, 'Search paths').fill('zzzz-no-such-path');
        await submit(page, 'Search');
        check((await page.locator('main p.empty').count()) === 1, 'a search with no match shows no p.empty');
    });

    await step('path detail of the top path', async () => {
        await visit(page, `/caches/${PRIVATE}/paths`);
        await follow(page, storeBase(storePath), page.locator('table#paths'));
        expectPath(page, `/caches/${PRIVATE}/paths/${hashOf(storePath)}`, 'the top path\'s link');
        const info = await page.locator('dl#path-info').evaluate((dl) => {
            const out = {};
            let key = null;
            for (const el of dl.children) {
                if (el.tagName === 'DT') key = el.textContent.trim();
                else if (el.tagName === 'DD' && key) out[key] = (out[key] ? `${out[key]} ` : '') + el.textContent.trim();
            }
            return out;
        });
        for (const key of ['Store path', 'NAR hash', 'NAR size', 'File size', 'Compression', 'Deriver', 'References', 'Signatures']) {
            check(key in info, `dl#path-info has no "${key}" (has ${Object.keys(info).join(', ')})`);
        }
        check(info['Store path'] === storePath, `"Store path" is ${JSON.stringify(info['Store path'])}`);
        check(info.Signatures.includes(`${PRIVATE}`), `"Signatures" does not show the cache's key name: ${info.Signatures}`);
        const refs = page.locator('dl#path-info dd a');
        check((await refs.count()) >= 1, 'the top path\'s "References" has no links');
        await audit(page, 'path-detail');
    });

    await step('tokens page: create a read token (no push command)', async () => {
        await visit(page, `/caches/${PRIVATE}/tokens`);
        check((await page.locator('section#new-token').count()) === 0, 'the tokens page shows a secret again on a plain GET');
        read = await createToken(page, PRIVATE, { permission: 'read', description: 'journey read' });
        check(read.push === null, 'a read token shows pre#new-token-push');
        check((await tokenRow(page, 'journey read').count()) === 1, 'table#tokens has no row for the read token');
        check((await tokenRow(page, 'journey push').count()) === 1, 'table#tokens has no row for the write token');
    });

    // The nix.conf snippet exactly as the overview renders it, after the base settings.
    const substitute = async (storeName, netrcLine) => {
        await visit(page, `/caches/${PRIVATE}`);
        const snippet = await text(page, 'pre#snippet-nix-conf');
        check(!/require-sigs\s*=\s*false/.test(snippet), `pre#snippet-nix-conf turns signatures off:\n${snippet}`);
        const store = freshStore(storeName);
        const conf = `require-sigs = true\n${snippet}\n`;
        const result = await nix('nix-store', ['--store', `local?root=${store}`, '-r', storePath], { conf, netrc: netrcText(netrcLine) });
        return { result, store, snippet };
    };

    await step('substitute into a fresh store with the nix.conf snippet and the read token, signatures required', async () => {
        const { result, store, snippet } = await substitute('with-read-token', read.netrc);
        if (result.code !== 0) {
            fail(`nix-store -r with the snippet failed (exit ${result.code}):\n${tail(result.stderr)}\nnix.conf snippet:\n${snippet}`);
        }
        for (const p of closure) check(inStore(store, p), `${p} is not in the fresh store ${store} after substitution`);
    });

    await step('revoke the read token via its confirmation page', async () => {
        await visit(page, `/caches/${PRIVATE}/tokens`);
        const row = tokenRow(page, 'journey read');
        check((await row.count()) === 1, 'no row for the read token');
        const id = await row.getAttribute('data-token-id');
        // The link reads "Revoke"; its accessible name may add which token ("Revoke token …").
        await follow(page, /^Revoke\b/, row);
        expectPath(page, `/caches/${PRIVATE}/tokens/${id}/revoke`, '"Revoke"');
        await audit(page, 'token-revoke');
        await submit(page, 'Revoke token');
        expectPath(page, `/caches/${PRIVATE}/tokens`, '"Revoke token"');
        check((await page.locator('p.flash[role="status"]').count()) === 1, 'no p.flash[role=status] after revoking');
        check((await tokenRow(page, 'journey read').count()) === 0, 'the revoked token is still listed');
        check((await tokenRow(page, 'journey push').count()) === 1, 'the write token is gone too');
    });

    await step('the same substitution with the revoked token is refused', async () => {
        const { result, store } = await substitute('after-revoke', read.netrc);
        check(result.code !== 0, `nix-store -r with a revoked token succeeded:\n${tail(result.stderr)}`);
        check(!inStore(store, storePath), `${storePath} arrived in ${store} with a revoked token`);
        // Nix 2.8 says the cache "does not appear to be a binary cache" when its
        // nix-cache-info answers 401; ask the server itself what it answers the token.
        const said = result.stderr.trim().split('\n').filter((l) => /401|403|unauthori[sz]ed|forbidden|HTTP error|does not appear to be a binary cache/i.test(l));
        check(said.length > 0, `nix-store -r failed, but not because the server refused the token:\n${tail(result.stderr)}`);
        const basic = Buffer.from(`larder:${read.secret}`).toString('base64');
        const info = await fetch(`${substituter.replace(/\/+$/, '')}/nix-cache-info`, { headers: { authorization: `Basic ${basic}` } });
        check(info.status === 401 || info.status === 403, `nix-cache-info with the revoked token answers ${info.status}`);
        console.log(`        nix: ${said[0].trim()} (nix-cache-info answers the revoked token ${info.status})`);
    });

    await step('keys page (server-held)', async () => {
        await visit(page, `/caches/${PRIVATE}`);
        await openTab(page, 'Keys');
        expectPath(page, `/caches/${PRIVATE}/keys`, 'tab "Keys"');
        check((await page.locator('table#keys tr:has(td)').count()) === 1, 'table#keys does not have one row');
        check((await page.getByRole('button', { name: 'Rotate key', exact: true }).count()) === 1, 'no "Rotate key" button');
        check((await page.getByRole('button', { name: 'Switch to client-held keys', exact: true }).count()) === 1, 'no "Switch to client-held keys" button');
        await audit(page, 'keys-server');
    });

    await step('settings page', async () => {
        await visit(page, `/caches/${PRIVATE}`);
        await openTab(page, 'Settings');
        expectPath(page, `/caches/${PRIVATE}/settings`, 'tab "Settings"');
        check(await page.getByRole('radio', { name: 'Private', exact: true }).isChecked(), 'settings do not show the cache as Private');
        check((await field(page, 'Description').inputValue()) === 'Built by the browser journey', 'settings do not show the description');
        check((await field(page, 'Type the cache name to confirm').count()) === 1, 'no "Type the cache name to confirm" input');
        await audit(page, 'settings');
    });

    await step(`public cache ${PUBLIC}: overview without netrc snippet`, async () => {
        await createCache(page, PUBLIC, { visibility: 'Public', signing: 'Server-held', priority: 30 });
        check((await page.locator('pre#snippet-netrc').count()) === 0, 'a public cache\'s overview shows pre#snippet-netrc');
        check((await page.locator('code.public-key').count()) === 1, 'the public cache shows no code.public-key');
        await audit(page, 'cache-overview-public');
    });

    await step(`client-held cache ${CLIENT}: keys page in client mode`, async () => {
        await createCache(page, CLIENT, { visibility: 'Private', signing: 'Client-held' });
        await openTab(page, 'Keys');
        check((await field(page, 'Public key').count()) === 1, 'client mode: no "Public key" input');
        check((await page.getByRole('button', { name: 'Register key', exact: true }).count()) === 1, 'client mode: no "Register key" button');
        check((await page.getByRole('button', { name: 'Switch to server-held keys', exact: true }).count()) === 1, 'no "Switch to server-held keys" button');
        await audit(page, 'keys-client');
    });

    await step('caches list shows the three caches', async () => {
        await page.locator('header').getByRole('link', { name: 'Caches', exact: true }).click();
        await page.waitForURL(/\/caches$/);
        const names = await page.locator('table#caches tr:has(td)').evaluateAll((rows) =>
            rows.map((r) => {
                const a = r.querySelector('td a, th a');
                return a ? `${a.textContent.trim()} ${a.getAttribute('href')}` : '(no link)';
            }),
        );
        for (const name of [PRIVATE, PUBLIC, CLIENT]) {
            check(names.includes(`${name} /caches/${name}`), `table#caches has no row linking ${name} to /caches/${name}: ${JSON.stringify(names)}`);
        }
        check(names.length === 3, `table#caches has ${names.length} rows`);
        const privateRow = page.locator('table#caches tr:has(td)').filter({ hasText: PRIVATE });
        check((await privateRow.textContent()).includes(String(closure.length)), `the ${PRIVATE} row does not show ${closure.length} paths`);
        await audit(page, 'caches');
    });

    await step('account page', async () => {
        await page.locator('header').getByRole('link', { name: 'Account', exact: true }).click();
        await page.waitForURL(/\/account$/);
        for (const label of ['Current password', 'New password', 'Type your username to confirm']) {
            check((await field(page, label).count()) === 1, `the account page has no "${label}"`);
        }
        check((await page.getByRole('button', { name: 'Create personal token', exact: true }).count()) === 1, 'no "Create personal token" button');
        await audit(page, 'account');
    });

    await step('landing page (logged in) links to "Your caches"', async () => {
        await visit(page, '/');
        check((await page.getByRole('link', { name: 'Your caches', exact: true }).count()) >= 1, 'the landing page of a logged-in user has no "Your caches"');
        await audit(page, 'landing-signed-in');
    });

    await step('log out → landing, anonymous; caches need a log-in again', async () => {
        await submit(page, 'Log out');
        expectPath(page, '/', '"Log out"');
        check((await page.getByRole('button', { name: 'Log out', exact: true }).count()) === 0, 'still shown as logged in after logging out');
        check((await page.locator('header').getByRole('link', { name: 'Log in', exact: true }).count()) === 1, 'no header link "Log in" after logging out');
        const response = await visit(page, '/caches');
        check(pathOf(page) === '/login' || response.status() === 401 || response.status() === 403, `GET /caches after logging out answered ${response.status()} at ${page.url()}`);
    });

    await step('log-in page → /caches', async () => {
        await visit(page, '/login');
        await audit(page, 'login');
        await logIn(page, USER, PASSWORD);
        expectPath(page, '/caches', 'log-in');
        await expectLoggedIn(page, USER);
    });
});
