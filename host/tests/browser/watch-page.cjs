// Drives www/index.html in headless Chromium for the end-to-end tests, with
// playwright-core (installed by .ci/run; found through NODE_PATH).
//
//   node watch-page.cjs URL
//
// Opens URL, then answers commands read from stdin, one per line, with one JSON line:
//   wait N   waits (up to 20 s) until the page lists at least N events, then reports
//   report   reports at once
// A report is {"state": ..., "ids": [...], "data": [...], "reconnects": N}.
const readline = require("readline");
const { launch } = require("./chromium.cjs");

async function main() {
  const browser = await launch();
  const page = await browser.newPage();
  await page.goto(process.argv[2]);
  const report = () => page.evaluate(() => ({
    state: document.getElementById("state").dataset.state,
    ids: [...document.querySelectorAll("#events li")].map((li) => li.dataset.id),
    data: [...document.querySelectorAll("#events li")].map((li) => li.dataset.data),
    reconnects: Number(document.getElementById("reconnects").textContent),
  }));
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, arg] = line.trim().split(/\s+/);
    if (command === "wait") {
      const n = Number(arg);
      await page
        .waitForFunction((n) => document.querySelectorAll("#events li").length >= n, n,
                         { timeout: 20000 })
        .catch(() => {});
    }
    console.log(JSON.stringify(await report()));
  }
  await browser.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
