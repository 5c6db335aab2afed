// Opens N EventSources at once from one page in headless Chromium, for the end-to-end
// test of HTTP/2 at the edge (playwright-core, found through NODE_PATH).
//
//   node many-sources.cjs URL N ENOUGH [CERT]
//
// Loads URL (a page of the gateway), opens N EventSources to /sse/0 .. /sse/N-1 on the
// page's origin, waits (up to 20 s) until at least ENOUGH of them got 3 `tick` events, then
// prints one JSON line: {"events": [per source], "states": [readyState per source],
// "protocol": the page's nextHopProtocol, "resources": nextHopProtocol of each /sse/
// resource entry, read after the sources are closed}.
//
// CERT is the PEM certificate the page is served with: Chromium trusts it by its pinned
// public key (--ignore-certificate-errors-spki-list, base64 of the SHA-256 of its SPKI),
// that certificate only, not every error on every host as --ignore-certificate-errors or
// ignoreHTTPSErrors would.
const crypto = require("crypto");
const fs = require("fs");
const { launch } = require("./chromium.cjs");

function spkiPin(certPath) {
  const spki = new crypto.X509Certificate(fs.readFileSync(certPath)).publicKey
    .export({ type: "spki", format: "der" });
  return crypto.createHash("sha256").update(spki).digest("base64");
}

async function main() {
  const [url, n, enough, cert] = process.argv.slice(2);
  const args = cert ? [`--ignore-certificate-errors-spki-list=${spkiPin(cert)}`] : [];
  const browser = await launch(args);
  const page = await browser.newPage();
  await page.goto(url);
  await page.evaluate((n) => {
    window.sources = [];
    for (let i = 0; i < n; i++) {
      const source = { events: 0, es: new EventSource(`/sse/${i}`) };
      source.es.addEventListener("tick", () => { source.events += 1; });
      window.sources.push(source);
    }
  }, Number(n));
  await page
    .waitForFunction((enough) => window.sources.filter((s) => s.events >= 3).length >= enough,
                     Number(enough), { timeout: 20000 })
    .catch(() => {});
  const report = await page.evaluate(async () => {
    const events = window.sources.map((s) => s.events);
    const states = window.sources.map((s) => s.es.readyState);
    for (const s of window.sources) s.es.close();
    // A closed EventSource's fetch ends, and then its resource timing entry appears: one
    // per source that had opened, looked for every 50 ms for up to 5 s.
    const sse = () => performance.getEntriesByType("resource")
      .filter((e) => new URL(e.name).pathname.startsWith("/sse/"));
    const opened = events.filter((n) => n > 0).length;
    for (let i = 0; i < 100 && sse().length < opened; i++) {
      await new Promise((done) => setTimeout(done, 50));
    }
    const protocol = performance.getEntriesByType("navigation")[0].nextHopProtocol;
    const resources = sse().map((e) => e.nextHopProtocol);
    return { events, states, protocol, resources };
  });
  console.log(JSON.stringify(report));
  await browser.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
