// Headless Chromium opens Turnstone's self-test page and waits for its verdicts.
//
// Usage: node selftest.mjs '<json>'
//   {"url": "http://127.0.0.1:8080/",        // the page
//    "chromium": "/usr/bin/chromium",          // optional, also env CHROMIUM
//    "screenshot": "/path/to/selftest.png",    // optional: a full-page screenshot when done
//    "timeoutMs": 120000}                      // optional: how long the page may take
// Prints one JSON line on stdout: {"ok", "state": the page's window.turnstoneSelftest,
// "headline", "checks": [{"mark", "what", "detail"}], "reportId", "console"}; exit 0 when the
// page finished (whatever its verdicts: the Rust test asserts them), 1 when it did not,
// 2 on bad input or a browser that cannot start.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

let browser = null;
let userDataDir = null;

function emit(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  browser = null;
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  userDataDir = null;
}

async function fail(code, error, extra = {}) {
  emit({ ok: false, error, ...extra });
  process.stderr.write(`selftest: FAILED: ${error}\n`);
  await cleanup();
  process.exit(code);
}

async function main() {
  let input;
  try {
    input = JSON.parse(process.argv[2] ?? "");
    if (typeof input.url !== "string") throw new Error("input.url must be the page's URL");
  } catch (e) {
    return fail(2, `bad input: ${e.message}`);
  }
  const executablePath = input.chromium ?? process.env.CHROMIUM ?? "/usr/bin/chromium";
  const timeoutMs = input.timeoutMs ?? 120_000;
  if (!fs.existsSync(executablePath)) return fail(2, `Chromium not found at ${executablePath}`);
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "turnstone-selftest-"));
  try {
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      timeout: 30_000,
      viewport: { width: 820, height: 900 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--allow-loopback-in-peer-connection",
        "--ignore-certificate-errors",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
  } catch (e) {
    return fail(2, `cannot launch Chromium at ${executablePath}: ${e.message}`);
  }
  const page = browser.pages()[0] ?? (await browser.newPage());
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
  try {
    await page.goto(input.url, { timeout: 30_000 });
    await page.waitForFunction(() => window.turnstoneSelftest && window.turnstoneSelftest.done, null, {
      timeout: timeoutMs,
      polling: 250,
    });
  } catch (e) {
    const partial = await page.evaluate(() => window.turnstoneSelftest ?? null).catch(() => null);
    return fail(1, `the page did not finish: ${e.message}`, { state: partial, console: consoleLines });
  }
  const result = await page.evaluate(() => ({
    state: window.turnstoneSelftest,
    headline: document.getElementById("headline").textContent,
    reportId: document.getElementById("reportid").textContent,
    checks: [...document.querySelectorAll("#checks li")].map((li) => ({
      mark: li.querySelector(".mark").className.replace("mark ", ""),
      what: li.querySelector(".what").textContent,
      detail: li.querySelector(".detail").textContent,
    })),
  }));
  if (input.screenshot) {
    await page.screenshot({ path: input.screenshot, fullPage: true });
  }
  emit({ ok: true, ...result, chromium: browser.browser()?.version() ?? null, console: consoleLines });
  await cleanup();
  process.exit(0);
}

main().catch((e) => fail(1, `unexpected: ${e && e.stack ? e.stack : e}`));
