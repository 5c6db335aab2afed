// @microsoft/fetch-event-source in headless Chromium: a page sends one request (a POST with
// a body, as LLM clients do) and reports the event stream it gets, for the end-to-end tests.
// Both packages come from NODE_PATH (scripts/test-deps.sh puts them in
// ~/.cache/playwright-core).
//
//   node fetch-event-source.cjs SPEC
//
// SPEC is a JSON object: page_url (where the page is, which decides whether the request is
// cross-origin), url (the stream), and optionally method (default POST), headers and body.
// The driver itself answers the page's address, its favicon, and the library's files under
// /__fetch-event-source/ there (the package's ES modules import "./fetch" without an
// extension, which a browser cannot resolve alone); every other request goes to the network,
// so the stream's origin sees only the stream's request. Once the library is loaded the
// routes are removed: while Playwright intercepts, it answers CORS preflights itself, and a
// cross-origin stream's preflight must reach the gateway.
//
// Prints one JSON line per thing the page saw, as it sees it:
//   {"open": STATUS, "content_type": ...}  the response head
//   {"message": {"id", "event", "data"}}   each event
//   {"closed": true}                        the stream ended
//   {"error": "..."}                        the request or the stream failed (never retried)
// then {"done": true}.
const fs = require("fs");
const path = require("path");
const { launch } = require("./chromium.cjs");

const LIBRARY = "/__fetch-event-source/";
const PAGE = `<!doctype html><html><body><script type="module">
import { fetchEventSource } from "${LIBRARY}index.js";
window.fetchEventSource = fetchEventSource;
</script></body></html>`;

const emit = (report) => console.log(JSON.stringify(report));

async function main() {
  const spec = JSON.parse(process.argv[2]);
  const esm = path.join(
    path.dirname(require.resolve("@microsoft/fetch-event-source/package.json")), "lib/esm");
  const pageUrl = new URL(spec.page_url);
  const browser = await launch();
  const page = await browser.newPage();
  await page.exposeFunction("report", emit);
  const served = (pathname) => pathname === pageUrl.pathname || pathname === "/favicon.ico" ||
    pathname.startsWith(LIBRARY);
  await page.route((url) => url.origin === pageUrl.origin && served(url.pathname), (route) => {
    const { pathname } = new URL(route.request().url());
    if (pathname === pageUrl.pathname) {
      return route.fulfill({ contentType: "text/html", body: PAGE });
    }
    const name = path.basename(pathname);
    const file = path.join(esm, name.endsWith(".js") ? name : `${name}.js`);
    if (!fs.existsSync(file)) return route.fulfill({ status: 404, body: "" });
    return route.fulfill({ contentType: "text/javascript", body: fs.readFileSync(file) });
  });
  await page.goto(spec.page_url);
  await page.waitForFunction(() => typeof window.fetchEventSource === "function");
  await page.unrouteAll();
  await page.evaluate(async (spec) => {
    const reports = []; // the library does not await its callbacks: they are awaited here
    const report = (what) => reports.push(window.report(what));
    try {
      await window.fetchEventSource(spec.url, {
        method: spec.method || "POST",
        headers: spec.headers || {},
        body: spec.body,
        openWhenHidden: true,
        async onopen(response) {
          const contentType = response.headers.get("content-type");
          report({ open: response.status, content_type: contentType });
          // What the library checks when there is no onopen of one's own.
          if (!contentType || !contentType.startsWith("text/event-stream")) {
            throw new Error(`not an event stream: ${response.status} ${contentType}`);
          }
        },
        onmessage(message) {
          report({ message: { id: message.id, event: message.event, data: message.data } });
        },
        onclose() {
          report({ closed: true });
        },
        onerror(error) {
          throw error; // the library retries unless onerror throws: a test wants the failure
        },
      });
    } catch (error) {
      report({ error: String(error) });
    }
    await Promise.all(reports);
  }, spec);
  emit({ done: true });
  await browser.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
