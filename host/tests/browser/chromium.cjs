// Headless Chromium for the page drivers, through playwright-core (found through
// NODE_PATH): Debian's /usr/bin/chromium (or $CHROMIUM), with the flags that keep it off a
// network it cannot reach.
const { chromium } = require("playwright-core");

exports.launch = () =>
  chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
