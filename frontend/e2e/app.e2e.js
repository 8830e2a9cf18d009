// @ts-check
// The web app in a real browser (headless Debian chromium via playwright-core) against a running
// Kiln stack. Started by e2e/run.sh, which passes the URLs in the environment.
import { mkdirSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const TARGET = new URL(process.env.KILN_E2E_BASE_URL ?? 'http://127.0.0.1:8080');

/**
 * A TCP relay between the browser and the app, so the test can cut every open connection, as a
 * network drop would (going offline in the browser does not end a stream already open).
 */
async function startRelay() {
  const sockets = new Set();
  const server = createServer((client) => {
    const upstream = createConnection({ host: TARGET.hostname, port: Number(TARGET.port) });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    /** Resets every open connection. */
    cut: () => sockets.forEach((socket) => socket.resetAndDestroy()),
    close: () => new Promise((resolve) => server.close(() => resolve(undefined))),
  };
}

const relay = await startRelay();
const BASE = relay.url;
const RESULTS = process.env.KILN_E2E_RESULTS ?? 'test-results';
const SHOTS = join(RESULTS, 'screenshots');
/** KILN_E2E_STRICT=1: a page whose API is missing fails instead of being skipped. */
const STRICT = process.env.KILN_E2E_STRICT === '1';
const TIMEOUT = 30_000;

mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.KILN_E2E_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  // launch() always starts chromium with a new empty --user-data-dir of its own, removed on close.
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
const consoleErrors = [];
page.on('pageerror', (error) => consoleErrors.push(String(error)));

const results = [];
let failed = false;

/** @param {string} name @param {() => Promise<void>} body */
async function step(name, body) {
  if (failed) {
    results.push([name, 'not run']);
    return;
  }
  const started = Date.now();
  try {
    await body();
    results.push([name, `ok ${Date.now() - started} ms`]);
  } catch (error) {
    failed = true;
    results.push([name, 'FAIL']);
    console.error(`[e2e] ${name} failed: ${error instanceof Error ? error.stack : error}`);
    await page.screenshot({ path: join(SHOTS, `failure-${name.replace(/\W+/g, '-')}.png`), fullPage: true }).catch(() => {});
  }
}

/** Whether the api has a route yet (a 404 from the fallback means it does not). */
async function hasApi(path) {
  const status = await page.evaluate(async (p) => (await fetch(p, { credentials: 'same-origin' })).status, path);
  return status !== 404 && status !== 405;
}

/** @param {string} name @param {string} path @param {() => Promise<void>} body */
async function featureStep(name, path, body) {
  if (!failed && !STRICT && !(await hasApi(path))) {
    results.push([name, `SKIPPED (${path} is not served by this api)`]);
    return;
  }
  await step(name, body);
}

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Replaces the editor's document (insertText avoids auto-indent rewriting the script). */
async function setScript(text) {
  const editor = page.locator('.cm-content');
  await editor.click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
}

const output = () => page.getByTestId('output');
const user = `e2e${Date.now().toString(36)}`;
const password = 'e2e-password-123';

await step('register', async () => {
  await page.goto(BASE);
  await page.waitForURL(/#\/login/);
  await shot('login');
  await page.getByRole('link', { name: 'Create an account' }).click();
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Email').fill(`${user}@example.com`);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByLabel('Repeat password').fill(password);
  await shot('register');
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.waitForURL(/#\/editor/);
  await page.getByTestId('username').filter({ hasText: user }).waitFor();
});

await step('log out and log in', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(/#\/login/);
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill('wrong-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: /wrong username or password/i }).waitFor();
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/#\/editor/);
});

await step('run python hello', async () => {
  await page.getByTestId('language').selectOption('python');
  await setScript('print("hello from the e2e test")\nprint("\\x1b[32mgreen\\x1b[0m")');
  await page.getByTestId('run').click();
  await output().filter({ hasText: 'hello from the e2e test' }).waitFor();
  await page.getByTestId('result-status').filter({ hasText: 'completed' }).waitFor();
  if ((await page.getByTestId('exit-code').innerText()).trim() !== '0') throw new Error('exit code is not 0');
  const green = output().locator('span[style*="--ansi-2"]', { hasText: 'green' });
  await green.waitFor();
  const timeline = await page.getByTestId('timeline').innerText();
  for (const status of ['queued', 'running', 'completed']) {
    if (!timeline.includes(status)) throw new Error(`timeline lacks ${status}: ${timeline}`);
  }
  await shot('editor');
});

await step('live output, and resume after a dropped connection', async () => {
  await setScript('import time\nfor i in range(5):\n    print(f"tick {i}", flush=True)\n    time.sleep(0.8)\nprint("done")');
  await page.getByTestId('run').click();
  await output().filter({ hasText: 'tick 1' }).waitFor();
  // The first lines are shown while the execution is still running.
  if ((await page.getByTestId('result').count()) !== 0) throw new Error('the result came before the live lines were checked');
  if (await page.getByTestId('cancel').isDisabled()) throw new Error('cancel is disabled while running');
  await shot('editor-live');
  // Drop the connection mid-run: the stream reconnects with Last-Event-ID and goes on where it
  // stopped, so every line is shown exactly once.
  relay.cut();
  await page.getByText('reconnecting…').waitFor();
  await output().filter({ hasText: 'done' }).waitFor();
  await page.getByTestId('result-status').filter({ hasText: 'completed' }).waitFor();
  const text = await output().innerText();
  const expected = 'tick 0\ntick 1\ntick 2\ntick 3\ntick 4\ndone';
  if (text.trim() !== expected) throw new Error(`output after the reconnect: ${JSON.stringify(text)}`);
});

await step('stdin, upload and download of a script file', async () => {
  await page.getByTestId('upload').setInputFiles({
    name: 'echo.py',
    mimeType: 'text/x-python',
    buffer: Buffer.from('name = input()\nprint(f"hi {name}")\n'),
  });
  await page.locator('.cm-content').filter({ hasText: 'name = input()' }).waitFor();
  if ((await page.getByTestId('language').inputValue()) !== 'python') throw new Error('the upload did not pick python');
  await page.getByText('Standard input').first().click();
  await page.getByTestId('stdin').fill('kiln');
  await page.getByTestId('run').click();
  await output().filter({ hasText: 'hi kiln' }).waitFor();
  await page.getByTestId('result-status').filter({ hasText: 'completed' }).waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download' }).click()]);
  if (download.suggestedFilename() !== 'echo.py') throw new Error(`downloaded as ${download.suggestedFilename()}`);
  await page.getByTestId('stdin').fill('');
});

let cancelledId = '';
await step('cancel a long run', async () => {
  await setScript('import time\nprint("started", flush=True)\ntime.sleep(60)');
  await page.getByTestId('run').click();
  await output().filter({ hasText: 'started' }).waitFor();
  await page.getByTestId('cancel').click();
  await page.getByTestId('result-status').filter({ hasText: 'cancelled' }).waitFor();
  cancelledId = (await page.getByTestId('execution-id').innerText()).trim();
});

await step('find it in history and open it', async () => {
  await page.getByRole('link', { name: 'History' }).click();
  await page.getByTestId('history-row').first().waitFor();
  await page.getByTestId('filter-status').selectOption('cancelled');
  await page.getByRole('button', { name: 'Apply' }).click();
  // The unfiltered page lists the completed runs too; the filtered one only the cancelled run.
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('[data-testid="history-row"]')];
    return rows.length === 1 && rows[0]?.getAttribute('data-status') === 'cancelled';
  });
  const row = page.getByTestId('history-row').filter({ has: page.locator(`code[title="${cancelledId}"]`) });
  await row.waitFor();
  await shot('history');
  await row.getByRole('link', { name: /Open run/ }).click();
  await page.getByTestId('execution-id').filter({ hasText: cancelledId }).waitFor();
  await page.getByTestId('result-status').filter({ hasText: 'cancelled' }).waitFor();
});

await step('run again from history', async () => {
  await page.getByRole('link', { name: 'History' }).click();
  await page.getByTestId('filter-status').selectOption('completed');
  await page.getByRole('button', { name: 'Apply' }).click();
  const hello = page.getByTestId('history-row').last();
  await hello.waitFor();
  await hello.getByRole('button', { name: /Run .* again/ }).click();
  await page.waitForURL(/#\/editor\?execution=/);
  await output().filter({ hasText: 'hello from the e2e test' }).waitFor();
  await page.getByTestId('result-status').filter({ hasText: 'completed' }).waitFor();
});

await featureStep('save and reload a script', '/api/v1/scripts', async () => {
  const name = `greeting ${user}`;
  await setScript('print("saved script")');
  await page.getByTestId('script-name').fill(name);
  await page.getByTestId('save-script').click();
  await page.getByRole('status').filter({ hasText: `Saved "${name}"` }).waitFor();
  await setScript('print("scratch")');
  await page.getByRole('link', { name: 'Scripts' }).click();
  const row = page.getByTestId('script-row').filter({ hasText: name });
  await row.waitFor();
  await row.getByRole('button', { name: `Rename ${name}` }).click();
  await page.getByLabel('New name').fill(`${name} v2`);
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  const renamed = page.getByTestId('script-row').filter({ hasText: `${name} v2` });
  await renamed.waitFor();
  await shot('scripts');
  await page.reload();
  await renamed.getByRole('button', { name: `Open ${name} v2 in the editor` }).click();
  await page.waitForURL(/#\/editor/);
  await page.locator('.cm-content').filter({ hasText: 'print("saved script")' }).waitFor();
  if ((await page.getByTestId('script-name').inputValue()) !== `${name} v2`) throw new Error('the loaded script kept the old name');
});

await featureStep('switch theme (stored on the server)', '/api/v1/settings', async () => {
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByTestId('theme-dark').check();
  await page.waitForFunction(() => document.documentElement.dataset.theme === 'dark');
  await page.getByTestId('font-size').fill('16');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('status').filter({ hasText: 'Saved' }).waitFor();
  await shot('settings-dark');
  // Another browser profile has no local copy: the theme comes from the server.
  const other = await browser.newContext();
  const fresh = await other.newPage();
  await fresh.goto(BASE);
  await fresh.getByLabel('Username').fill(user);
  await fresh.getByLabel('Password').fill(password);
  await fresh.getByRole('button', { name: 'Sign in' }).click();
  await fresh.waitForFunction(() => document.documentElement.dataset.theme === 'dark', null, { timeout: TIMEOUT });
  await other.close();
  await page.getByRole('link', { name: 'Editor' }).click();
  await shot('editor-dark');
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByTestId('theme-light').check();
  await page.waitForFunction(() => document.documentElement.dataset.theme === 'light');
});

await featureStep('receive a notification', '/api/v1/notifications', async () => {
  await page.getByRole('link', { name: 'Editor' }).click();
  const before = Number((await page.getByTestId('unread-count').textContent({ timeout: 1000 }).catch(() => '0')) ?? 0);
  await setScript('print("notify me")');
  await page.getByTestId('run').click();
  await page.getByTestId('result-status').filter({ hasText: 'completed' }).waitFor();
  await page.waitForFunction(
    (n) => Number(document.querySelector('[data-testid="unread-count"]')?.textContent ?? 0) > n,
    before,
    { timeout: TIMEOUT },
  );
  await page.getByTestId('bell').click();
  await page.getByTestId('notification').first().waitFor();
  await shot('notifications');
  await page.getByRole('button', { name: 'Mark all read' }).click();
  await page.getByTestId('unread-count').waitFor({ state: 'detached' });
  await page.keyboard.press('Escape');
});

await step('narrow screen', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole('button', { name: 'Menu' }).click();
  await page.getByRole('link', { name: 'Editor' }).click();
  await page.getByTestId('run').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 2) throw new Error(`the page is ${overflow}px wider than a phone screen`);
  await shot('editor-narrow');
});

if (consoleErrors.length > 0 && !failed) {
  failed = true;
  results.push(['no uncaught page errors', 'FAIL']);
  console.error(`[e2e] uncaught page errors:\n${consoleErrors.join('\n')}`);
}

await browser.close();
await relay.close();
for (const [name, result] of results) console.log(`[e2e] ${name.padEnd(40)} ${result}`);
console.log(`[e2e] screenshots: ${SHOTS}`);
process.exit(failed ? 1 : 0);
