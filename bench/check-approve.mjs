// The run loop of bench/check-approve.sh (which sets up the tailnet and starts this in the
// control server's namespace, where the identity provider listens on loopback): RUNS held
// SSH logins per flavour, alternating, each approved in a real headless Chromium
// (playwright-core from tests/oidc, the same steps as tests/oidc/drive.mjs):
//
//   sso      goto the check link /check/<token>, press #sso, sign in at the provider as
//            alice (prompt=login: the form every time); t0 just before pressing #sso, so
//            the figure includes the provider round trip
//   console  the admin console's pending page (signed in once by SSO as alice, group eng),
//            t0 just before clicking form[action="/admin/pending/approve"] button
//
// t1 is when ssh's stdout line arrives (same process, same monotonic clock). One JSON
// line per run goes to OUT/runs.jsonl; failures are recorded, not hidden.
//
//   node bench/check-approve.mjs CONFIG.json
//
// CONFIG: {runs, flavours, serverUrl, ssh: [argv...], admin: [argv...], out, nodeLog,
//          gapMs, timeoutMs}
import { createRequire } from 'node:module';
import { spawn, execFile } from 'node:child_process';
import { readFileSync, appendFileSync, mkdirSync } from 'node:fs';
import { promisify } from 'node:util';

const require = createRequire(new URL('../tests/oidc/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const run = promisify(execFile);

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
mkdirSync(`${cfg.out}/shots`, { recursive: true });
const mono = () => performance.now(); // ms, monotonic
const wall = () => performance.timeOrigin + performance.now(); // ms since the epoch
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error(new Date().toISOString().slice(11, 23), ...a);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
async function newPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  // When the browser sends the requests that matter (the approving POST, the provider's
  // redirect back to /oidc/callback) and when their responses arrive.
  page.marks = {};
  page.on('request', (r) => {
    const p = new URL(r.url()).pathname;
    if (p === '/oidc/callback' || p === '/admin/pending/approve') page.marks[`${p}:req`] = mono();
  });
  page.on('response', (r) => {
    const p = new URL(r.url()).pathname;
    if (p === '/oidc/callback' || p === '/admin/pending/approve') page.marks[`${p}:resp`] = mono();
  });
  return page;
}
const away = (u) => !u.pathname.startsWith('/interaction') && !u.pathname.startsWith('/auth');

// drive.mjs's `sso` op, with a mark just before the provider's form is submitted.
async function sso(page, person, marks) {
  await Promise.all([page.waitForNavigation(), page.click('#sso')]);
  if (await page.locator('input[name=login]').count() > 0) {
    await page.fill('input[name=login]', person);
    await page.fill('input[name=password]', 'anything');
    marks.submit = mono();
    await Promise.all([page.waitForNavigation({ url: away }), page.click('button[type=submit]')]);
  }
  if (new URL(page.url()).pathname === '/oidc/callback' && await page.locator('meta[http-equiv=refresh]').count() > 0) {
    await page.waitForURL((u) => u.pathname !== '/oidc/callback');
  }
}

// The console: signed in once, as alice, by SSO.
const consolePage = await newPage();
await consolePage.goto(`${cfg.serverUrl}/admin/login`);
await sso(consolePage, 'alice', {});
if (!(await consolePage.innerText('body')).includes('alice@example.com Sign out')) {
  throw new Error(`console sign-in ended at ${consolePage.url()}: ${await consolePage.innerText('body')}`);
}
// The check links: a context of their own (the console's session cookie is not needed
// there, and the provider's session does not help: a check asks for prompt=login).
const checkPage = await newPage();

// Starts the held login; resolves once its banner shows the check link.
function startSsh() {
  const s = { start: mono(), stdout: '', stderr: '' };
  s.child = spawn(cfg.ssh[0], cfg.ssh.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  s.exited = new Promise((resolve) => s.child.on('exit', (code, signal) => resolve(code ?? signal)));
  s.proceeded = new Promise((resolve) => {
    s.child.stdout.on('data', (d) => {
      const t = mono(); // first thing: the arrival time
      s.stdout += d;
      if (s.stdout.includes('proceeded') && !s.t1) {
        s.t1 = t;
        resolve(t);
      }
    });
  });
  s.held = new Promise((resolve) => {
    s.child.stderr.on('data', (d) => {
      const t = mono();
      s.stderr += d;
      const m = s.stderr.match(/\/check\/([A-Za-z0-9_-]+)/);
      if (m && !s.token) {
        s.token = m[1];
        s.heldAt = t;
        resolve(m[1]);
      }
    });
  });
  return s;
}

function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); }),
  ]);
}

// The node's own log line for the approval (RFC 3339, microseconds): the last one.
function nodeApprovedAt() {
  const lines = readFileSync(cfg.nodeLog, 'utf8').split('\n').filter((l) => l.includes('SSH check approved'));
  if (!lines.length) return null;
  const stamp = lines[lines.length - 1].match(/^\S*?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d+)Z/);
  if (!stamp) return null;
  return Date.parse(`${stamp[1]}Z`) + Number(`0.${stamp[2]}`) * 1000;
}

async function one(flavour, i) {
  const r = { flavour, run: i, ok: false };
  const s = startSsh();
  const t0wallBase = wall() - mono(); // converts marks to wall-clock ms
  try {
    const token = await within(s.held, cfg.timeoutMs, 'the hold banner');
    r.hold_ms = s.heldAt - s.start;
    // The server lists it (meshcontrol auth list --json): a `check` entry with the token.
    const { stdout } = await run(cfg.admin[0], [...cfg.admin.slice(1), 'auth', 'list', '--json']);
    const listed = JSON.parse(stdout).some((p) => p.kind === 'check' && p.token === token);
    r.listed_ms = mono() - s.start;
    if (!listed) throw new Error(`token ${token} not in auth list: ${stdout}`);
    const marks = {};
    let page;
    if (flavour === 'sso') {
      page = checkPage;
      page.marks = {};
      await page.goto(`${cfg.serverUrl}/check/${token}`);
      marks.t0 = mono();
      await sso(page, 'alice', marks);
    } else {
      page = consolePage;
      await page.goto(`${cfg.serverUrl}/admin/pending`);
      const text = await page.innerText('body');
      if (!text.includes('SSH check')) throw new Error(`no SSH check on the pending page: ${text}`);
      page.marks = {};
      marks.t0 = mono();
      await Promise.all([page.waitForNavigation(), page.click('form[action="/admin/pending/approve"] button')]);
    }
    marks.nav = mono();
    const body = await page.innerText('body');
    const t1 = await within(s.proceeded, cfg.timeoutMs, 'ssh to print');
    const code = await within(s.exited, cfg.timeoutMs, 'ssh to exit');
    if (code !== 0) throw new Error(`ssh exited ${code}: ${s.stderr}`);
    if (!s.stderr.includes('# To authenticate, visit:')) throw new Error(`not held: ${s.stderr}`);
    const node = nodeApprovedAt();
    const req = page.marks['/oidc/callback:req'] ?? page.marks['/admin/pending/approve:req'];
    const resp = page.marks['/oidc/callback:resp'] ?? page.marks['/admin/pending/approve:resp'];
    Object.assign(r, {
      ok: true,
      approve_ms: t1 - marks.t0, // the figure: t0 (before the approving op) to ssh's output
      submit_ms: marks.submit ? t1 - marks.submit : undefined, // sso: provider form submitted
      request_ms: req ? t1 - req : undefined, // the approving request leaves the browser
      response_ms: req && resp ? resp - req : undefined, // that request's response time
      page_ms: marks.nav - marks.t0, // the op's page finished loading
      node_ms: node ? t1 - (node - t0wallBase) : undefined, // node logged the approval
      page_end: page.url(),
      page_said: body.split('\n').find((l) => /approv|check|signed|authenticat/i.test(l)) ?? '',
    });
  } catch (e) {
    r.error = String(e && e.message || e);
    r.stderr = s.stderr;
    s.child.kill();
    await page_shot(flavour, i);
  }
  return r;
}

async function page_shot(flavour, i) {
  for (const [name, p] of [['console', consolePage], ['check', checkPage]]) {
    await p.screenshot({ path: `${cfg.out}/shots/fail-${flavour}-${i}-${name}.png` }).catch(() => {});
  }
}

// Run 0 of each flavour warms up (the tunnel, the pages, the session code); it is kept
// in runs.jsonl as warmup and left out of the figures.
let failures = 0;
for (let i = 0; i <= cfg.runs; i++) {
  for (const flavour of cfg.flavours) {
    const r = await one(flavour, i);
    if (i === 0) r.warmup = true;
    appendFileSync(`${cfg.out}/runs.jsonl`, JSON.stringify(r) + '\n');
    if (r.ok) {
      log(`${flavour} ${i}: ${r.approve_ms.toFixed(1)} ms (hold after ${r.hold_ms.toFixed(0)} ms)`);
    } else {
      failures++;
      log(`${flavour} ${i}: FAILED: ${r.error}`);
    }
    // Past the rule's checkPeriod (1s; the server counts whole seconds): the next login is
    // held again, not let through by this approval.
    await sleep(cfg.gapMs);
  }
}
await browser.close();
process.exit(failures ? 1 : 0);
