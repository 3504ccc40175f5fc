// A real headless browser (Debian's Chromium driven by playwright-core) that a test steers
// step by step: one JSON command per line on standard input, one JSON answer per line on
// standard output ({"ok", "status", "title", "text", "url", "error"}), so the test can
// check the tailnet between two clicks. Screenshots go to SHOT_DIR.
//
//   node drive.mjs SHOT_DIR
//
// Commands:
//   {"op": "goto", "url": "..."}                   open a page
//   {"op": "click", "selector": "..."}            click something that loads a page
//   {"op": "fill", "selector": "...", "value": "..."}
//   {"op": "select", "selector": "...", "value": "..."}
//   {"op": "sso", "person": "alice"}              press #sso and sign in at the provider
//   {"op": "shot", "name": "..."}                 a full-page screenshot, SHOT_DIR/NAME.png
//   {"op": "fresh"}                               a new browser context (no cookies)
//   {"op": "page"}                                only the answer
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';

const [shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--disable-gpu'] });

let context;
let page;
let status = 0;
async function fresh() {
  if (context) await context.close();
  context = await browser.newContext();
  page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) status = r.status();
  });
}
await fresh();

async function answer() {
  return { ok: true, status, title: await page.title(), text: await page.innerText('body'), url: page.url() };
}

const away = (u) => !u.pathname.startsWith('/interaction') && !u.pathname.startsWith('/auth');

async function run(cmd) {
  switch (cmd.op) {
    case 'goto': await page.goto(cmd.url); break;
    case 'click': await Promise.all([page.waitForNavigation(), page.click(cmd.selector)]); break;
    case 'fill': await page.fill(cmd.selector, cmd.value); break;
    case 'select': await page.selectOption(cmd.selector, cmd.value); break;
    case 'sso':
      await Promise.all([page.waitForNavigation(), page.click('#sso')]);
      if (await page.locator('input[name=login]').count() > 0) {
        await page.fill('input[name=login]', cmd.person);
        await page.fill('input[name=password]', 'anything');
        await Promise.all([page.waitForNavigation({ url: away }), page.click('button[type=submit]')]);
      }
      // A page of ours that moves on by itself (the console's "signed in" page).
      if (new URL(page.url()).pathname === '/oidc/callback' && await page.locator('meta[http-equiv=refresh]').count() > 0) {
        await page.waitForURL((u) => u.pathname !== '/oidc/callback');
      }
      break;
    case 'shot': await page.screenshot({ path: `${shots}/${cmd.name}.png`, fullPage: true }); break;
    case 'fresh': await fresh(); break;
    case 'page': break;
    default: throw new Error(`unknown op ${cmd.op}`);
  }
  return answer();
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let reply;
  try {
    reply = await run(JSON.parse(line));
  } catch (e) {
    reply = { ok: false, error: String(e && e.message || e), url: page ? page.url() : '' };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}
await browser.close();
