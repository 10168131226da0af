// Checks lib.mjs itself against a tiny local server that sends the dashboard's CSP:
// the CSP is enforced (an inline script and an injected script tag are refused), axe-core
// still runs (injected through the DevTools protocol), a clean page passes the audit with
// screenshots at both widths, and a page with serious violations fails it, naming them.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import { Failure, SCREENSHOT_DIR, WIDTHS, audit, check, newPage, run, text } from './lib.mjs';

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const layout = (title, body) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title><link rel="stylesheet" href="/static/site.css"><script src="/static/site.js" defer></script></head>
<body><a href="#main" class="skip">Skip to content</a><header><nav aria-label="Site"><a href="/">Home</a></nav></header>
<main id="main">${body}</main></body></html>`;

const pages = {
    '/clean': layout(
        'Clean',
        `<h1>Clean page</h1><p id="status">static</p>
         <form method="post" action="/clean"><label for="name">Name</label><input id="name" name="name">
         <button type="submit">Save</button></form><pre id="snippet">substituters = x</pre>`,
    ),
    '/bad': layout(
        'Bad',
        `<h1>Bad page</h1><img src="/static/x.png"><input id="unlabelled" name="q">
         <p class="lowcontrast">hard to read</p><div style="color: red">inline style</div>
         <script>document.title = 'inline ran';</script>`,
    ),
};
const statics = {
    '/static/site.css': ['text/css', 'body{font-family:sans-serif;color:#111;background:#fff} .lowcontrast{color:#ddd} .skip{position:absolute;left:-999px} .skip:focus{left:0}'],
    '/static/site.js': ['text/javascript', "document.addEventListener('DOMContentLoaded', () => { const s = document.getElementById('status'); if (s) s.textContent = 'external ran'; });"],
};

const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (statics[url.pathname]) {
        const [type, body] = statics[url.pathname];
        res.writeHead(200, { 'content-type': type });
        res.end(body);
    } else if (pages[url.pathname]) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': CSP });
        res.end(pages[url.pathname]);
    } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found');
    }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;

await run('selftest', async ({ browser, step, watch }) => {
    const page = watch(await newPage(browser));

    await step('the CSP header is enforced: an external script runs, an injected script tag is refused', async () => {
        await page.goto(`${base}/clean`);
        check((await text(page, '#status')) === 'external ran', 'the external script did not run');
        let refused = false;
        try {
            await page.addScriptTag({ content: "document.getElementById('status').textContent = 'tag ran';" });
        } catch {
            refused = true;
        }
        check(refused || (await text(page, '#status')) !== 'tag ran', 'an inline script tag ran despite the CSP');
    });

    await step('a clean page under the CSP passes the audit, with screenshots at both widths', async () => {
        for (const w of WIDTHS) fs.rmSync(path.join(SCREENSHOT_DIR, `selftest-clean-${w}.png`), { force: true });
        // The CSP violation of the script tag above is reported by audit; start afresh.
        const clean = watch(await newPage(browser));
        await clean.goto(`${base}/clean`);
        await audit(clean, 'selftest-clean');
        for (const w of WIDTHS) {
            const file = path.join(SCREENSHOT_DIR, `selftest-clean-${w}.png`);
            check(fs.existsSync(file) && fs.statSync(file).size > 1000, `${file} was not written`);
            const png = fs.readFileSync(file);
            check(png.readUInt32BE(16) === w, `${file} is ${png.readUInt32BE(16)} px wide, not ${w}`);
        }
        check((await clean.viewportSize()).width === WIDTHS[0], 'audit did not restore the viewport');
    });

    await step('a page with serious violations and CSP violations fails the audit, naming each', async () => {
        const bad = await newPage(browser);
        await bad.goto(`${base}/bad`);
        check((await bad.title()) === 'Bad', 'the inline script of /bad ran despite the CSP');
        let message = '';
        try {
            await audit(bad, 'selftest-bad');
        } catch (e) {
            check(e instanceof Failure, `audit threw something else: ${e.stack}`);
            message = e.message;
        }
        if (process.env.SELFTEST_VERBOSE) console.log(message);
        check(message !== '', 'audit passed a page with an unlabelled input and an image without alt');
        for (const expected of ['image-alt', 'label', 'color-contrast', 'CSP violation']) {
            check(message.includes(expected), `audit's message does not name ${expected}:\n${message}`);
        }
        await bad.context().close();
    });
});
server.close();
