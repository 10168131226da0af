// Shared helpers for Larder's browser tests: Debian's Chromium driven by playwright-core,
// accessibility audits with axe-core (under the dashboard's strict CSP), full-page
// screenshots at two widths, the real nix client, and step reporting.
//
// Environment (set by tests/tests/e2e/dashboard.rs):
//   LARDER_URL             http://127.0.0.1:PORT of the server under test
//   LARDER_STORE_PATH      a store path in the machine's /nix/store (its closure is pushed)
//   LARDER_NIX_ROOT        scratch directory for nix's HOME, caches, config, netrc, stores
//   LARDER_SCREENSHOT_DIR  where screenshots go (default <repo>/target/browser-screenshots)
//   LARDER_BROWSER_TIMEOUT_SECS  the whole script's limit (default 170)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..', '..');
export const CHROMIUM = '/usr/bin/chromium';
export const SCREENSHOT_DIR = process.env.LARDER_SCREENSHOT_DIR || path.join(REPO_ROOT, 'target', 'browser-screenshots');

const require = createRequire(import.meta.url);
const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export const WIDTHS = [1280, 375];
const HEIGHT = 800;

/** Fails the script with `message` (caught by `run`). */
export class Failure extends Error {}

export function fail(message) {
    throw new Failure(message);
}

export function check(condition, message) {
    if (!condition) fail(message);
}

export function env(name) {
    const value = process.env[name];
    if (!value) fail(`${name} is not set (the Rust runner tests/tests/e2e/dashboard.rs sets it)`);
    return value;
}

// ---------------------------------------------------------------------------------------
// The browser

/** Launches Debian's Chromium headless (playwright gives it a fresh temporary profile,
 *  removed on close). */
export async function launch() {
    if (!fs.existsSync(CHROMIUM)) {
        fail(`${CHROMIUM} is missing: run bash scripts/provision.sh browser`);
    }
    return chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: [
            '--headless',
            '--no-sandbox',
            '--disable-gpu',
            '--disable-background-networking',
            '--disable-component-update',
            '--disable-sync',
            '--no-first-run',
        ],
        timeout: 60_000,
    });
}

const pageProblems = new WeakMap();

/** A new context (its own cookies: one per user) and a page in it, watched for CSP
 *  violations and uncaught script errors, which `audit` reports as failures. */
export async function newPage(browser, options = {}) {
    const context = await browser.newContext({ viewport: { width: WIDTHS[0], height: HEIGHT }, ...options });
    context.setDefaultTimeout(15_000);
    context.setDefaultNavigationTimeout(20_000);
    const page = await context.newPage();
    const problems = [];
    pageProblems.set(page, problems);
    page.on('console', (message) => {
        if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
            problems.push(`CSP violation on ${page.url()}: ${message.text()}`);
        }
    });
    page.on('pageerror', (error) => problems.push(`uncaught script error on ${page.url()}: ${error.message}`));
    return page;
}

// ---------------------------------------------------------------------------------------
// Audit: screenshots at both widths and axe-core, on the page as it is

const audited = new Set();

/** Puts axe-core into the page's main world. Evaluated through the DevTools protocol, which
 *  the page's CSP (no 'unsafe-inline', no 'unsafe-eval') does not apply to; a script tag
 *  would be refused. */
async function injectAxe(page) {
    const present = await page.evaluate(() => typeof window.axe === 'object' && typeof window.axe.run === 'function');
    if (!present) {
        await page.evaluate(AXE_SOURCE);
    }
    const ok = await page.evaluate(() => typeof window.axe === 'object' && typeof window.axe.run === 'function');
    check(ok, `axe-core could not be injected into ${page.url()}`);
}

async function runAxe(page) {
    await injectAxe(page);
    return page.evaluate(async () => {
        const results = await window.axe.run(document, {
            resultTypes: ['violations'],
            runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] },
        });
        return results.violations.map((v) => ({
            id: v.id,
            impact: v.impact,
            help: v.help,
            nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary || '' })),
        }));
    });
}

function describeViolations(violations) {
    return violations
        .map((v) => {
            const nodes = v.nodes.map((n) => `      at ${n.target}${n.summary ? `\n        ${n.summary.replace(/\n/g, '\n        ')}` : ''}`);
            return `    [${v.impact}] ${v.id}: ${v.help}\n${nodes.join('\n')}`;
        })
        .join('\n');
}

/** Saves full-page screenshots `<name>-1280.png` and `<name>-375.png` in SCREENSHOT_DIR and
 *  runs axe-core at each width; throws listing every serious or critical violation (and
 *  any CSP violation or uncaught script error seen on the page so far). Minor and moderate
 *  findings are printed, not fatal. Leaves the page at its first width. */
export async function audit(page, name) {
    check(/^[a-z0-9][a-z0-9-]*$/.test(name), `audit name ${JSON.stringify(name)}: use lowercase letters, digits and dashes`);
    check(!audited.has(name), `audit name ${name} used twice in one script`);
    audited.add(name);
    fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
    const serious = new Map();
    const minor = new Map();
    for (const width of WIDTHS) {
        await page.setViewportSize({ width, height: HEIGHT });
        await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}-${width}.png`), fullPage: true });
        for (const v of await runAxe(page)) {
            const into = v.impact === 'serious' || v.impact === 'critical' ? serious : minor;
            if (!into.has(v.id)) into.set(v.id, v);
        }
        if (width < 600) {
            const overflow = await page.evaluate(() => {
                const width = document.documentElement.clientWidth;
                const by = document.documentElement.scrollWidth - width;
                if (by <= 0) return null;
                // The outermost elements that stick out (their parent does not).
                const describe = (el) => el.tagName.toLowerCase() + (el.id ? `#${el.id}` : '') + [...el.classList].map((c) => `.${c}`).join('');
                const out = [];
                for (const el of document.body.querySelectorAll('*')) {
                    const right = el.getBoundingClientRect().right;
                    const parent = el.parentElement;
                    if (right > width + 0.5 && (!parent || parent === document.body || parent.getBoundingClientRect().right <= width + 0.5)) {
                        out.push(`${parent && parent !== document.body ? `${describe(parent)} > ` : ''}${describe(el)} (${Math.round(right)} px)`);
                    }
                }
                // Text that spills out of a box that does not clip it (a long word, a path).
                const spills = [...document.body.querySelectorAll('*')].filter((el) => {
                    const style = getComputedStyle(el);
                    return style.overflowX === 'visible' && el.scrollWidth > el.clientWidth + 1 && el.getBoundingClientRect().left + el.scrollWidth > width + 0.5;
                });
                for (const el of spills) {
                    if (!spills.some((other) => other !== el && el.contains(other))) out.push(`text in ${describe(el)} (to ${Math.round(el.getBoundingClientRect().left + el.scrollWidth)} px)`);
                }
                return { by, culprits: out.slice(0, 5) };
            });
            if (overflow) {
                console.log(`note  - ${name}: at ${width} px the page scrolls sideways by ${overflow.by} px; sticking out: ${overflow.culprits.join(', ') || '(none found)'}`);
            }
        }
    }
    await page.setViewportSize({ width: WIDTHS[0], height: HEIGHT });
    if (minor.size > 0) {
        console.log(`note  - ${name}: axe minor/moderate (not fatal):\n${describeViolations([...minor.values()])}`);
    }
    const problems = pageProblems.get(page) || [];
    const found = [];
    if (serious.size > 0) found.push(`axe found serious/critical violations:\n${describeViolations([...serious.values()])}`);
    if (problems.length > 0) found.push(...problems.splice(0));
    if (found.length > 0) fail(`audit of ${name} (${page.url()}):\n  ${found.join('\n  ')}`);
    console.log(`audit - ${name}: ${WIDTHS.map((w) => `${name}-${w}.png`).join(', ')}; no serious/critical axe violations`);
}

// ---------------------------------------------------------------------------------------
// Reading the page

/** textContent of the one element `selector` matches, trimmed; fails if none or several. */
export async function text(page, selector) {
    const found = page.locator(selector);
    const count = await found.count();
    check(count === 1, `expected exactly one ${selector} on ${page.url()}, found ${count}`);
    return ((await found.textContent()) || '').trim();
}

/** textContent of every element `selector` matches, trimmed. */
export async function texts(page, selector) {
    return (await page.locator(selector).allTextContents()).map((t) => t.trim());
}

/** The visible text of <main>, whitespace collapsed (for error messages and comparisons). */
export async function mainText(page) {
    const main = page.locator('main');
    if ((await main.count()) === 0) return (await page.locator('body').innerText()).replace(/\s+/g, ' ').trim();
    return (await main.first().innerText()).replace(/\s+/g, ' ').trim();
}

/** Path of the page's URL (no origin, no query). */
export function pathOf(page) {
    return new URL(page.url()).pathname;
}

export function expectPath(page, expected, what) {
    const got = pathOf(page);
    check(got === expected, `${what}: expected to be at ${expected}, but the browser is at ${page.url()}`);
}

/** Parses a human size ("12.3 KiB", "512 B", "1.0 MB") into bytes. */
export function parseSize(human) {
    const m = /^([0-9]+(?:[.,][0-9]+)?)\s*(B|bytes?|KiB|MiB|GiB|TiB|kB|KB|MB|GB|TB)?$/i.exec(human.trim());
    if (!m) return NaN;
    const units = { b: 1, byte: 1, bytes: 1, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12 };
    return parseFloat(m[1].replace(',', '.')) * (units[(m[2] || 'b').toLowerCase()] ?? NaN);
}

// ---------------------------------------------------------------------------------------
// The real nix client, isolated under LARDER_NIX_ROOT

/** Settings every nix call gets first in its nix.conf: no daemon, no sandbox, no default
 *  substituter (a plain `substituters =` after a snippet's `extra-substituters` would wipe
 *  it, so the snippet goes after these). */
export const BASE_NIX_CONF = ['experimental-features = nix-command', 'sandbox = false', 'build-users-group =', 'substituters ='].join('\n');

let nixCalls = 0;

/**
 * Runs a nix command with its own HOME, a fresh XDG_CACHE_HOME (nix caches narinfos on
 * disk) and a fresh NIX_CONF_DIR whose nix.conf is BASE_NIX_CONF then `conf`; `netrc` (text)
 * is written to a file named by `netrc-file` in NIX_CONFIG. Resolves to
 * { code, stdout, stderr, dir } without throwing on a non-zero exit.
 */
export async function nix(program, args, { conf = '', netrc = '', timeoutSecs = 90 } = {}) {
    const root = env('LARDER_NIX_ROOT');
    const call = `${String(++nixCalls).padStart(2, '0')}-${path.basename(program)}`;
    const dir = path.join(root, 'calls', call);
    for (const sub of ['home', 'cache', 'conf']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    fs.writeFileSync(path.join(dir, 'conf', 'nix.conf'), `${BASE_NIX_CONF}\n${conf}\n`);
    fs.writeFileSync(path.join(dir, 'netrc'), netrc);
    const childEnv = {
        PATH: process.env.PATH || '/usr/bin:/bin',
        HOME: path.join(dir, 'home'),
        XDG_CACHE_HOME: path.join(dir, 'cache'),
        XDG_CONFIG_HOME: path.join(dir, 'home', '.config'),
        NIX_CONF_DIR: path.join(dir, 'conf'),
        NIX_CONFIG: `netrc-file = ${path.join(dir, 'netrc')}\nconnect-timeout = 10`,
    };
    return new Promise((resolve, reject) => {
        const child = spawn(program, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => {
            stderr += `\n[killed after ${timeoutSecs} s]`;
            child.kill('SIGKILL');
        }, timeoutSecs * 1000);
        child.on('error', (e) => {
            clearTimeout(timer);
            reject(new Failure(`running ${program}: ${e.message} (is nix-bin installed? bash scripts/provision.sh nix)`));
        });
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            resolve({ code: code ?? 128, signal, stdout, stderr, dir, command: `${program} ${args.join(' ')}` });
        });
    });
}

/** Like `nix`, but fails the step on a non-zero exit, showing what nix said. */
export async function nixOk(program, args, options = {}) {
    const run = await nix(program, args, options);
    if (run.code !== 0) {
        fail(`${run.command} exited ${run.code}:\n${tail(run.stderr)}\n(nix.conf: ${path.join(run.dir, 'conf', 'nix.conf')})`);
    }
    return run;
}

export function tail(textValue, lines = 25) {
    return textValue.trim().split('\n').slice(-lines).join('\n');
}

/** The closure of a store path (itself included), as nix-store -qR prints it. */
export async function closureOf(storePath) {
    const run = await nixOk('nix-store', ['-qR', storePath]);
    return run.stdout.split('\n').filter(Boolean);
}

/** A fresh chroot store directory under LARDER_NIX_ROOT. */
export function freshStore(name) {
    const dir = path.join(env('LARDER_NIX_ROOT'), 'stores', name);
    check(!fs.existsSync(dir), `store ${dir} already exists`);
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    return dir;
}

// ---------------------------------------------------------------------------------------
// Running a script: one line per passed step, a clear message and non-zero exit on failure

/**
 * Runs `body({ browser, step })`; `step(name, fn)` runs one step and prints `ok    - name`.
 * On failure prints the step, the message, and (for a page given to `step`'s `onFailPage`
 * via `watch(page)`) its URL and main text plus a screenshot FAILED-<n>.png; exits 1.
 */
export async function run(title, body) {
    const limit = Number(process.env.LARDER_BROWSER_TIMEOUT_SECS || 170);
    const started = Date.now();
    let browser;
    let current = '(launching the browser)';
    const watched = new Set();
    const timer = setTimeout(async () => {
        console.error(`FAILED ${title}: still running after ${limit} s (during step: ${current})`);
        try {
            await browser?.close();
        } finally {
            process.exit(1);
        }
    }, limit * 1000);
    const step = async (name, fn) => {
        current = name;
        const t0 = Date.now();
        const result = await fn();
        console.log(`ok    - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
        return result;
    };
    const watch = (page) => {
        watched.add(page);
        return page;
    };
    // Failure screenshots of an earlier run of this script would mislead.
    if (fs.existsSync(SCREENSHOT_DIR)) {
        for (const file of fs.readdirSync(SCREENSHOT_DIR)) {
            if (file.startsWith(`FAILED-${title}-`)) fs.rmSync(path.join(SCREENSHOT_DIR, file), { force: true });
        }
    }
    try {
        browser = await launch();
        await body({ browser, step, watch });
        console.log(`PASSED ${title}: all steps in ${((Date.now() - started) / 1000).toFixed(1)} s`);
        clearTimeout(timer);
        await browser.close();
        process.exit(0);
    } catch (error) {
        clearTimeout(timer);
        console.error(`\nFAILED ${title}, step "${current}":\n${error instanceof Failure ? error.message : error.stack || error}`);
        let n = 0;
        for (const page of watched) {
            if (page.isClosed()) continue;
            n += 1;
            try {
                const shot = path.join(SCREENSHOT_DIR, `FAILED-${title}-${n}.png`);
                fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
                await page.screenshot({ path: shot, fullPage: true, timeout: 5000 });
                console.error(`  page ${n}: ${page.url()}\n  screenshot: ${shot}\n  main text: ${(await mainText(page)).slice(0, 1500)}`);
            } catch (e) {
                console.error(`  page ${n}: ${page.url()} (could not capture it: ${e.message})`);
            }
        }
        try {
            await browser?.close();
        } catch {
            // already gone
        }
        process.exit(1);
    }
}
