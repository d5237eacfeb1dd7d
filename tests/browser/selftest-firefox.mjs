// Headless Firefox (Debian firefox-esr) opens Turnstone's self-test page and waits for its
// verdicts, driven over Marionette, Firefox's own remote protocol (no geckodriver needed):
// length-prefixed JSON on a TCP port Firefox writes into the profile.
//
// Usage: node selftest-firefox.mjs '<json>'
//   {"url": "http://127.0.0.1:8080/",     // the page
//    "firefox": "/usr/bin/firefox-esr",     // optional, also env FIREFOX
//    "timeoutMs": 120000}                   // optional: how long the page may take
// Prints one JSON line on stdout, the shape selftest.mjs prints: {"ok", "state", "headline",
// "checks", "reportId", "firefox"}; exit 0 when the page finished, 1 when it did not, 2 on
// bad input or a browser that cannot start.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

let firefox = null;
let profile = null;
let socket = null;

function emit(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

function cleanup() {
  if (socket) socket.destroy();
  socket = null;
  if (firefox && firefox.exitCode === null) firefox.kill("SIGKILL");
  firefox = null;
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  profile = null;
}

function fail(code, error, extra = {}) {
  emit({ ok: false, error, ...extra });
  process.stderr.write(`selftest-firefox: FAILED: ${error}\n`);
  cleanup();
  process.exit(code);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Preferences for a quiet headless run that may use loopback for WebRTC (the server is on
// 127.0.0.1) and shows real host candidates.
const PREFS = {
  "marionette.port": 0,
  "remote.prefs.recommended": true,
  "browser.shell.checkDefaultBrowser": false,
  "browser.startup.homepage_override.mstone": "ignore",
  "datareporting.policy.dataSubmissionEnabled": false,
  "toolkit.telemetry.reportingpolicy.firstRun": false,
  "app.update.disabledForTesting": true,
  "network.proxy.type": 0,
  "media.peerconnection.ice.loopback": true,
  "media.peerconnection.ice.obfuscate_host_addresses": false,
};

// A Marionette connection: `len:json` frames; commands [0, id, name, params] are answered
// with [1, id, error, result].
class Marionette {
  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.waiting = [];
    this.nextId = 1;
    sock.on("data", (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.drain();
    });
  }

  drain() {
    for (;;) {
      const colon = this.buf.indexOf(":");
      if (colon < 0) return;
      const len = Number(this.buf.subarray(0, colon).toString());
      if (this.buf.length < colon + 1 + len) return;
      const msg = JSON.parse(this.buf.subarray(colon + 1, colon + 1 + len).toString());
      this.buf = this.buf.subarray(colon + 1 + len);
      const next = this.waiting.shift();
      if (next) next(msg);
    }
  }

  next() {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async command(name, params = {}) {
    const id = this.nextId++;
    const body = JSON.stringify([0, id, name, params]);
    const reply = this.next();
    this.sock.write(`${Buffer.byteLength(body)}:${body}`);
    const [, , error, result] = await reply;
    if (error) throw new Error(`${name}: ${error.error}: ${error.message}`);
    return result;
  }
}

async function waitForPort(dir, deadline) {
  const file = path.join(dir, "MarionetteActivePort");
  while (Date.now() < deadline) {
    if (fs.existsSync(file)) {
      const port = Number(fs.readFileSync(file, "utf8").trim());
      if (port > 0) return port;
    }
    await sleep(100);
  }
  throw new Error("Firefox did not open its Marionette port");
}

async function main() {
  let input;
  try {
    input = JSON.parse(process.argv[2] ?? "");
    if (typeof input.url !== "string") throw new Error("input.url must be the page's URL");
  } catch (e) {
    return fail(2, `bad input: ${e.message}`);
  }
  const executable = input.firefox ?? process.env.FIREFOX ?? "/usr/bin/firefox-esr";
  const timeoutMs = input.timeoutMs ?? 120_000;
  if (!fs.existsSync(executable)) return fail(2, `Firefox not found at ${executable}`);
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "turnstone-firefox-"));
  const prefs = Object.entries(PREFS).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});`);
  fs.writeFileSync(path.join(profile, "user.js"), prefs.join("\n") + "\n");
  const stderr = [];
  firefox = spawn(executable, ["--headless", "--marionette", "--no-remote", "--profile", profile], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, MOZ_HEADLESS: "1" },
  });
  firefox.stderr.on("data", (d) => stderr.push(d.toString()));
  let mn;
  let version = null;
  try {
    const port = await waitForPort(profile, Date.now() + 60_000);
    socket = net.connect(port, "127.0.0.1");
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    mn = new Marionette(socket);
    await mn.next(); // the hello: {"applicationType": "gecko", "marionetteProtocol": 3}
    const session = await mn.command("WebDriver:NewSession", {
      capabilities: { alwaysMatch: { acceptInsecureCerts: true } },
    });
    version = session?.capabilities?.browserVersion ?? null;
  } catch (e) {
    return fail(2, `cannot drive Firefox at ${executable}: ${e.message}`, { stderr: stderr.join("").slice(-2000) });
  }
  const read = `const s = window.turnstoneSelftest;
    if (!s || !s.done) return null;
    return JSON.stringify({
      state: s,
      headline: document.getElementById("headline").textContent,
      reportId: document.getElementById("reportid").textContent,
      checks: [...document.querySelectorAll("#checks li")].map((li) => ({
        mark: li.querySelector(".mark").className.replace("mark ", ""),
        what: li.querySelector(".what").textContent,
        detail: li.querySelector(".detail").textContent,
      })),
    });`;
  try {
    await mn.command("WebDriver:Navigate", { url: input.url });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { value } = await mn.command("WebDriver:ExecuteScript", { script: read, args: [] });
      if (value) {
        emit({ ok: true, ...JSON.parse(value), firefox: version });
        cleanup();
        process.exit(0);
      }
      if (Date.now() > deadline) throw new Error(`the page did not finish within ${timeoutMs} ms`);
      await sleep(500);
    }
  } catch (e) {
    return fail(1, e.message, { stderr: stderr.join("").slice(-2000) });
  }
}

main().catch((e) => fail(1, `unexpected: ${e && e.stack ? e.stack : e}`));
