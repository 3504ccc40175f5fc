// A real headless browser (Debian's Chromium driven by playwright-core) for meshcontrol's
// single sign-on tests: opens a login link, presses "Continue with single sign-on", signs
// in at the provider as PERSON, and prints the page it ends on as JSON
// ({"status", "title", "text", "url"}). Screenshots of every page go to SHOT_DIR as
// NAME-1-login.png, NAME-2-provider.png, NAME-3-result.png.
//
//   node browser.mjs LINK PERSON SHOT_DIR NAME
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const [link, person, shots, name] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--disable-gpu'] });
try {
  const page = await browser.newPage();
  let status = 0;
  page.on('response', (r) => { if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) status = r.status(); });
  await page.goto(link);
  await page.screenshot({ path: `${shots}/${name}-1-login.png`, fullPage: true });
  const sso = page.locator('#sso');
  if (await sso.count() === 0) {
    console.log(JSON.stringify({ status, title: await page.title(), text: await page.innerText('body'), url: page.url() }));
    process.exit(0);
  }
  await Promise.all([page.waitForNavigation(), sso.click()]);
  await page.screenshot({ path: `${shots}/${name}-2-provider.png`, fullPage: true });
  if (await page.locator('input[name=login]').count() > 0) {
    await page.fill('input[name=login]', person);
    await page.fill('input[name=password]', 'anything');
    await Promise.all([page.waitForNavigation({ url: (u) => !u.pathname.startsWith('/interaction') && !u.pathname.startsWith('/auth') }), page.click('button[type=submit]')]);
  }
  await page.screenshot({ path: `${shots}/${name}-3-result.png`, fullPage: true });
  console.log(JSON.stringify({ status, title: await page.title(), text: await page.innerText('body'), url: page.url() }));
} finally {
  await browser.close();
}
