// Runs the text of one tracking-code <script> (read from stdin) in a fresh V8 context with a
// minimal window/document, then prints {"paq": window._paq, "inserted": [...]} as JSON.
"use strict";
const vm = require("vm");

let source = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => { source += chunk; });
process.stdin.on("end", () => {
  const inserted = [];
  const firstScript = {
    parentNode: {
      insertBefore(node, before) {
        if (before !== firstScript) throw new Error("inserted before an unexpected node");
        inserted.push({ tag: node.tag, src: node.src, async: node.async, nonce: node.nonce ?? null });
      },
    },
  };
  const document = {
    createElement(tag) { return { tag }; },
    getElementsByTagName(tag) {
      if (tag !== "script") throw new Error("unexpected tag " + tag);
      return [firstScript];
    },
  };
  const sandbox = { window: {}, document };
  vm.runInNewContext(source, sandbox, { timeout: 5000 });
  if (sandbox._paq !== sandbox.window._paq) throw new Error("_paq is not window._paq");
  process.stdout.write(JSON.stringify({ paq: sandbox.window._paq, inserted }));
});
