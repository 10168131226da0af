// What a person does on the dashboard, as the page contract (labels, ids) describes it:
// sign up, log in, create a cache, create a token, push with the real nix client.

import fs from 'node:fs';
import path from 'node:path';

import { check, closureOf, env, expectPath, fail, mainText, nixOk, pathOf, text } from './lib.mjs';

export const BASE_URL = () => env('LARDER_URL').replace(/\/+$/, '');

export const PASSWORD = 'Pantry-Shelf-7-Jars-of-Quince';

/** Clicks the button named `name` (exact accessible name) and waits for the page it leads
 *  to; returns that page's main response (after redirects). */
export async function submit(page, name, scope = page) {
    const button = scope.getByRole('button', { name, exact: true });
    const count = await button.count();
    check(count === 1, `expected one button "${name}" on ${page.url()}, found ${count}`);
    const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), button.click()]);
    return response;
}

/** Goes to `urlPath` on the server; returns the response. */
export async function visit(page, urlPath) {
    const response = await page.goto(`${BASE_URL()}${urlPath}`);
    check(response !== null, `no response for ${urlPath}`);
    return response;
}

/** Follows the link named `name` (exact, or a RegExp) inside `scope`; returns the response. */
export async function follow(page, name, scope = page) {
    const link = scope.getByRole('link', name instanceof RegExp ? { name } : { name, exact: true });
    const count = await link.count();
    check(count >= 1, `no link "${name}" on ${page.url()}`);
    const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), link.first().click()]);
    return response;
}

export function field(page, label) {
    return page.getByLabel(label, { exact: true });
}

/** The one visible h1's text. */
export async function heading(page) {
    return text(page, 'h1');
}

export async function expectStatus(response, status, what) {
    check(response.status() === status, `${what}: expected HTTP ${status}, got ${response.status()} at ${response.url()}`);
}

/** Fills in and sends the sign-up form; returns the response (no checks). */
export async function fillSignUp(page, { username, email, password }) {
    await visit(page, '/signup');
    await field(page, 'Username').fill(username);
    await field(page, 'Email').fill(email);
    await field(page, 'Password').fill(password);
    return submit(page, 'Sign up');
}

/** Signs up and checks the account lands on /caches, logged in. */
export async function signUp(page, username) {
    const response = await fillSignUp(page, { username, email: `${username}@example.com`, password: PASSWORD });
    if (pathOf(page) !== '/caches') {
        fail(`sign-up of ${username} did not lead to /caches (HTTP ${response.status()} at ${page.url()}): ${(await mainText(page)).slice(0, 500)}`);
    }
    await expectLoggedIn(page, username);
}

export async function expectLoggedIn(page, who) {
    const logout = page.getByRole('button', { name: 'Log out', exact: true });
    check((await logout.count()) === 1, `${who} is not shown as logged in on ${page.url()} (no "Log out" button)`);
    for (const name of ['Caches', 'Account']) {
        check((await page.locator('header').getByRole('link', { name, exact: true }).count()) >= 1, `no header link "${name}" on ${page.url()}`);
    }
}

export async function logIn(page, username, password = PASSWORD) {
    await visit(page, '/login');
    await field(page, 'Username').fill(username);
    await field(page, 'Password').fill(password);
    return submit(page, 'Log in');
}

/**
 * Creates a cache through /caches → "New cache"; `visibility` is "Public" or "Private",
 * `signing` "Server-held" or "Client-held". Checks it lands on /caches/{name}.
 */
export async function createCache(page, name, { visibility = 'Private', signing = 'Server-held', description = '', priority = '' } = {}) {
    await visit(page, '/caches');
    await follow(page, 'New cache');
    expectPath(page, '/caches/new', '"New cache"');
    await fillNewCache(page, name, { visibility, signing, description, priority });
    const response = await submit(page, 'Create cache');
    if (pathOf(page) !== `/caches/${name}`) {
        fail(`creating cache ${name} did not lead to /caches/${name} (HTTP ${response.status()} at ${page.url()}): ${(await mainText(page)).slice(0, 500)}`);
    }
    return response;
}

export async function fillNewCache(page, name, { visibility = 'Private', signing = 'Server-held', description = '', priority = '' } = {}) {
    await field(page, 'Name').fill(name);
    await page.getByRole('group', { name: 'Visibility' }).getByRole('radio', { name: visibility, exact: true }).check();
    await page.getByRole('group', { name: 'Signing keys' }).getByRole('radio', { name: signing, exact: true }).check();
    if (priority !== '') await field(page, 'Priority').fill(String(priority));
    if (description !== '') await field(page, 'Description').fill(description);
}

/** The cache's tabs (nav "Cache"): follows the tab named `tab`. */
export async function openTab(page, tab) {
    const nav = page.getByRole('navigation', { name: 'Cache', exact: true });
    check((await nav.count()) === 1, `no navigation "Cache" (the cache's tabs) on ${page.url()}`);
    return follow(page, tab, nav);
}

/**
 * On the cache's tokens page, creates a token; returns { secret, netrc, push } as the page
 * shows them (push: pre#new-token-push, or null when absent).
 */
export async function createToken(page, cache, { permission, description, expires = 'never' }) {
    if (pathOf(page) !== `/caches/${cache}/tokens`) await visit(page, `/caches/${cache}/tokens`);
    await field(page, 'Permission').selectOption(permission);
    await field(page, 'Description').fill(description);
    await field(page, 'Expires').selectOption(expires);
    const response = await submit(page, 'Create token');
    await expectStatus(response, 200, `creating a ${permission} token`);
    check((await page.locator('section#new-token').count()) === 1, `no section#new-token after creating a ${permission} token`);
    const secret = await text(page, 'code#new-token-secret');
    const netrc = await text(page, 'pre#new-token-netrc');
    check(secret.length >= 16, `code#new-token-secret is ${JSON.stringify(secret)}`);
    const host = new URL(BASE_URL()).hostname;
    const m = /^machine (\S+) login (\S+) password (\S+)$/.exec(netrc);
    check(m !== null, `pre#new-token-netrc is not one netrc line "machine HOST login larder password SECRET": ${JSON.stringify(netrc)}`);
    check(m[1] === host, `pre#new-token-netrc names machine ${m[1]}, not ${host}`);
    check(m[3] === secret, `pre#new-token-netrc's password is not the secret code#new-token-secret shows`);
    const pushBlock = page.locator('pre#new-token-push');
    const push = (await pushBlock.count()) === 1 ? ((await pushBlock.textContent()) || '').trim() : null;
    return { secret, netrc, push };
}

/** The row of table#tokens whose cells include `description`. */
export function tokenRow(page, description) {
    return page.locator('table#tokens tr[data-token-id]').filter({ hasText: description });
}

/** Writes a netrc file text exactly as the page showed it (plus a newline). */
export function netrcText(line) {
    return `${line}\n`;
}

/** Pushes the closure of `storePath` with `nix copy --to <substituter>` and the netrc line. */
export async function pushClosure(substituter, storePath, netrcLine) {
    const run = await nixOk('nix', ['copy', '--to', substituter, storePath], { netrc: netrcText(netrcLine) });
    return run;
}

/** The substituter URL of the cache overview the page shows (code#substituter). */
export async function substituterOf(page) {
    const url = await text(page, 'code#substituter');
    check(/^https?:\/\/\S+$/.test(url), `code#substituter is not a URL: ${JSON.stringify(url)}`);
    return url;
}

/** Pushes the closure of LARDER_STORE_PATH into `cache` with a new write token made on the
 *  tokens page; returns { closure, substituter, token }. */
export async function pushThroughUi(page, cache, description = 'push from the browser test') {
    await visit(page, `/caches/${cache}`);
    const substituter = await substituterOf(page);
    await visit(page, `/caches/${cache}/tokens`);
    const token = await createToken(page, cache, { permission: 'write', description });
    const storePath = env('LARDER_STORE_PATH');
    await pushClosure(substituter, storePath, token.netrc);
    return { closure: await closureOf(storePath), substituter, token };
}

export function storeBase(storePath) {
    return path.basename(storePath);
}

export function hashOf(storePath) {
    return storeBase(storePath).slice(0, 32);
}

/** True if `storePath` was substituted into the chroot store at `root` with its contents. */
export function inStore(root, storePath) {
    const copy = path.join(root, storePath);
    if (!fs.existsSync(copy)) return false;
    const original = path.join(storePath, 'data');
    if (fs.existsSync(original)) {
        return fs.existsSync(path.join(copy, 'data')) && fs.readFileSync(path.join(copy, 'data')).equals(fs.readFileSync(original));
    }
    return true;
}

