// Headless Chromium WebRTC through Turnstone with iceTransportPolicy "relay".
//
// Two RTCPeerConnections in one page, each allowed only relay candidates from the
// given TURN server(s), connect and exchange data-channel messages; the selected
// candidate pair must be relay/relay on both sides (RFC 8656 §2.4: every packet
// crosses the TURN server).
//
// Usage: node relay-test.mjs '<json>'   (or the JSON in env TURNSTONE_ICE)
//   {"label": "udp/static",
//    "iceServers": [{"urls": "turn:127.0.0.1:3478?transport=udp",
//                    "username": "u", "credential": "p"}],
//    "chromium": "/usr/bin/chromium"}            // optional, also env CHROMIUM
// Prints one JSON line on stdout; exit 0 on success, 1 on a failed scenario,
// 2 on bad input or a browser that cannot start, 3 on the 60 s overall timeout.

import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const TOTAL_TIMEOUT_MS = 60_000;
const SCENARIO_TIMEOUT_MS = Number(process.env.SCENARIO_TIMEOUT_MS ?? 40_000);
const MESSAGES = 5;
const BIG_MESSAGE_BYTES = 32 * 1024;

let browser = null; // a persistent BrowserContext (owns the browser)
let server = null;
let userDataDir = null;

function emit(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  browser = null;
  if (server) server.close();
  server = null;
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  userDataDir = null;
}

async function fail(code, label, error, extra = {}) {
  emit({ ok: false, label, error, ...extra });
  process.stderr.write(`relay-test ${label}: FAILED: ${error}\n`);
  await cleanup();
  process.exit(code);
}

function parseInput() {
  const text = process.argv[2] ?? process.env.TURNSTONE_ICE;
  if (!text) throw new Error("no ICE configuration: pass JSON as argv[2] or env TURNSTONE_ICE");
  const input = JSON.parse(text);
  if (!Array.isArray(input.iceServers) || input.iceServers.length === 0) {
    throw new Error("input.iceServers must be a non-empty array");
  }
  return input;
}

// A secure context (http://127.0.0.1 is potentially trustworthy) with nothing in it.
function startPageServer() {
  return new Promise((resolve, reject) => {
    const s = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end("<!doctype html><meta charset=utf-8><title>turnstone relay test</title>");
    });
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => resolve(s));
  });
}

// Runs inside the page. Returns a plain object (never throws).
async function scenario({ iceServers, timeoutMs, messages, bigBytes }) {
  const t0 = performance.now();
  const events = [];
  const iceErrors = [];
  const log = (m) => events.push(`${Math.round(performance.now() - t0)}ms ${m}`);
  const config = { iceServers, iceTransportPolicy: "relay" };
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  const peers = { a, b };
  const gathered = { a: [], b: [] };
  const pending = { a: [], b: [] }; // candidates for a peer before its remote description
  const other = { a: "b", b: "a" };

  // Fails the scenario early: a peer that gathered no relay candidate can never connect.
  let abort;
  const aborted = new Promise((_, reject) => (abort = reject));
  const deliver = (to, cand) => {
    peers[to].addIceCandidate(cand).catch((e) => log(`${to} addIceCandidate failed: ${e}`));
  };
  for (const name of ["a", "b"]) {
    const pc = peers[name];
    pc.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) {
        log(`${name} gathering complete`);
        if (gathered[name].length === 0) {
          const why = iceErrors.map((x) => `${x.url}: ${x.errorCode} ${x.errorText}`).join("; ");
          abort(new Error(`peer ${name} gathered no relay candidate (icecandidateerror: ${why || "none"})`));
        }
        return;
      }
      gathered[name].push(e.candidate.candidate);
      log(`${name} candidate ${e.candidate.candidate}`);
      const to = other[name];
      if (peers[to].remoteDescription) deliver(to, e.candidate);
      else pending[to].push(e.candidate);
    };
    pc.onicecandidateerror = (e) => {
      iceErrors.push({
        peer: name, url: e.url, errorCode: e.errorCode, errorText: e.errorText,
        address: e.address, port: e.port,
      });
      log(`${name} icecandidateerror ${e.url} ${e.errorCode} ${e.errorText}`);
    };
    pc.oniceconnectionstatechange = () => log(`${name} ice ${pc.iceConnectionState}`);
    pc.onconnectionstatechange = () => log(`${name} connection ${pc.connectionState}`);
    pc.onicegatheringstatechange = () => log(`${name} gathering ${pc.iceGatheringState}`);
  }
  const setRemote = async (name, desc) => {
    await peers[name].setRemoteDescription(desc);
    for (const c of pending[name].splice(0)) deliver(name, c);
  };

  const candidateInfo = (s) =>
    s && {
      candidateType: s.candidateType, protocol: s.protocol, relayProtocol: s.relayProtocol,
      address: s.address ?? s.ip, port: s.port, url: s.url,
    };
  const selectedPair = async (pc) => {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      stats.forEach((s) => {
        if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
      });
    }
    const pairs = [];
    stats.forEach((s) => {
      if (s.type === "candidate-pair") pairs.push({ id: s.id, state: s.state, nominated: s.nominated });
    });
    if (!pair) return { selected: null, pairs };
    return {
      selected: {
        state: pair.state, nominated: pair.nominated,
        bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived,
        currentRoundTripTime: pair.currentRoundTripTime,
        local: candidateInfo(stats.get(pair.localCandidateId)),
        remote: candidateInfo(stats.get(pair.remoteCandidateId)),
      },
      pairs,
    };
  };

  const run = async () => {
    const dcA = a.createDataChannel("turnstone", { ordered: true });
    const dcBPromise = new Promise((resolve) => (b.ondatachannel = (e) => resolve(e.channel)));
    await a.setLocalDescription();
    await setRemote("b", a.localDescription);
    await b.setLocalDescription();
    await setRemote("a", b.localDescription);
    log("offer/answer done");

    const openA = dcA.readyState === "open" ? null : new Promise((r) => (dcA.onopen = r));
    const dcB = await dcBPromise;
    if (openA) await openA;
    if (dcB.readyState !== "open") await new Promise((r) => (dcB.onopen = r));
    log("data channels open");

    // B echoes everything back; A checks the echoes arrive in order.
    dcB.onmessage = (e) => dcB.send(e.data);
    const big = "x".repeat(bigBytes);
    const expected = [];
    for (let i = 0; i < messages; i++) expected.push(`ping ${i}`);
    expected.push(big);
    const received = [];
    const allEchoed = new Promise((resolve) => {
      dcA.onmessage = (e) => {
        received.push(e.data);
        if (received.length === expected.length) resolve();
      };
    });
    for (const m of expected) dcA.send(m);
    await allEchoed;
    for (let i = 0; i < expected.length; i++) {
      if (received[i] !== expected[i]) throw new Error(`echo ${i} differs (length ${received[i].length})`);
    }
    log(`${expected.length} messages echoed`);
    return expected.length;
  };

  let ok = true;
  let error = null;
  let echoed = 0;
  let timer;
  try {
    echoed = await Promise.race([
      run(),
      aborted,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no data-channel echo within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (e) {
    ok = false;
    error = String(e && e.message ? e.message : e);
  } finally {
    clearTimeout(timer);
  }
  const statsA = await selectedPair(a).catch((e) => ({ error: String(e) }));
  const statsB = await selectedPair(b).catch((e) => ({ error: String(e) }));
  const states = {
    a: { ice: a.iceConnectionState, connection: a.connectionState },
    b: { ice: b.iceConnectionState, connection: b.connectionState },
  };
  a.close();
  b.close();
  return {
    ok, error, echoed, elapsedMs: Math.round(performance.now() - t0),
    a: statsA, b: statsB, states, gathered, iceErrors, events,
  };
}

// "local/remote" candidate types of a side's selected pair, e.g. "relay/relay".
function pairTypes(side) {
  const sel = side && side.selected;
  if (!sel || !sel.local || !sel.remote) return null;
  return `${sel.local.candidateType}/${sel.remote.candidateType}`;
}

function isRelayPair(side) {
  const sel = side && side.selected;
  return !!(sel && sel.local && sel.remote &&
    sel.local.candidateType === "relay" && sel.remote.candidateType === "relay");
}

async function main() {
  let input;
  try {
    input = parseInput();
  } catch (e) {
    return fail(2, "?", `bad input: ${e.message}`);
  }
  const label = input.label ?? "relay";
  const executablePath = input.chromium ?? process.env.CHROMIUM ?? "/usr/bin/chromium";

  const overall = setTimeout(() => {
    fail(3, label, `overall timeout of ${TOTAL_TIMEOUT_MS} ms`);
  }, TOTAL_TIMEOUT_MS);

  if (!fs.existsSync(executablePath)) {
    return fail(2, label, `Chromium not found at ${executablePath}`);
  }
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "turnstone-chromium-"));
  server = await startPageServer();
  const pageUrl = `http://127.0.0.1:${server.address().port}/`;
  try {
    // Playwright refuses --user-data-dir in args: a persistent context takes the
    // fresh directory instead (and closing it closes the browser).
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: true,
      timeout: 30_000,
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
    return fail(2, label, `cannot launch Chromium at ${executablePath}: ${e.message}`);
  }
  const page = browser.pages()[0] ?? (await browser.newPage());
  const consoleLines = [];
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  await page.goto(pageUrl);
  const secure = await page.evaluate(() => window.isSecureContext);
  if (!secure) return fail(1, label, `${pageUrl} is not a secure context`);

  const result = await page.evaluate(scenario, {
    iceServers: input.iceServers,
    timeoutMs: SCENARIO_TIMEOUT_MS,
    messages: MESSAGES,
    bigBytes: BIG_MESSAGE_BYTES,
  });
  clearTimeout(overall);
  const version = browser.browser()?.version() ?? null;
  const relayRelay = isRelayPair(result.a) && isRelayPair(result.b);
  const summary = {
    ok: result.ok && relayRelay,
    label,
    chromium: version,
    elapsedMs: result.elapsedMs,
    echoed: result.echoed,
    // Flat fields for the Rust test to match on.
    selectedTypes: { a: pairTypes(result.a), b: pairTypes(result.b) },
    relayProtocols: {
      a: result.a.selected?.local?.relayProtocol ?? null,
      b: result.b.selected?.local?.relayProtocol ?? null,
    },
    selected: { a: result.a.selected ?? null, b: result.b.selected ?? null },
    iceErrors: result.iceErrors,
    gathered: result.gathered,
  };
  if (!result.ok || !relayRelay) {
    const why = !result.ok ? result.error : "selected candidate pair is not relay/relay";
    return fail(1, label, why, {
      ...summary, states: result.states, pairs: { a: result.a.pairs, b: result.b.pairs },
      events: result.events, console: consoleLines,
    });
  }
  emit(summary);
  await cleanup();
  process.exit(0);
}

main().catch((e) => fail(1, "?", `unexpected: ${e && e.stack ? e.stack : e}`));
