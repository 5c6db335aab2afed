// Headless Chromium for the page drivers, through playwright-core (found through
// NODE_PATH): Debian's /usr/bin/chromium (or $CHROMIUM), with the flags that keep it off a
// network it cannot reach. Local Network Access checks are off: a page the driver serves
// itself (Playwright's route.fulfill) has no address, so Chromium takes it for a public one
// and blocks its requests to 127.0.0.1 before a byte is sent, where the tests' gateway is.
// `extraArgs` are more Chromium flags (a pinned test certificate, say).
const { chromium } = require("playwright-core");

exports.launch = (extraArgs = []) =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           "--disable-features=LocalNetworkAccessChecks", ...extraArgs],
  });
