#!/usr/bin/env node
// Compiles chain/contracts/**/*.sol with the pinned solc-js (package.json) into chain/artifacts/<Name>.json
// (test-only contracts under contracts/test/ go to artifacts/test/). Output is deterministic: sorted keys,
// repository-relative source names, no metadata hash. `node chain/build.js --check` compiles in memory and
// exits 1 when the committed artifacts differ (stale, missing or extra).
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const CONTRACTS = path.join(__dirname, "contracts");
const ARTIFACTS = path.join(__dirname, "artifacts");

function listSol(dir) {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .flatMap((e) => (e.isDirectory() ? listSol(path.join(dir, e.name)) : e.name.endsWith(".sol") ? [path.join(dir, e.name)] : []));
}

function findImport(name) {
  const candidates = [path.join(ROOT, "node_modules", name), path.join(ROOT, name)];
  for (const c of candidates) if (fs.existsSync(c)) return { contents: fs.readFileSync(c, "utf8") };
  return { error: `import not found: ${name}` };
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  }
  return v;
}

function compile() {
  const sources = {};
  for (const f of listSol(CONTRACTS)) {
    sources[path.relative(ROOT, f).split(path.sep).join("/")] = { content: fs.readFileSync(f, "utf8") };
  }
  const input = {
    language: "Solidity",
    sources,
    settings: {
      evmVersion: "cancun",
      optimizer: { enabled: true, runs: 1000 },
      metadata: { bytecodeHash: "none", appendCBOR: false },
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  for (const e of out.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if (errors.length) process.exit(2);
  const files = {};
  for (const src of Object.keys(sources)) {
    for (const [name, c] of Object.entries(out.contracts[src] || {})) {
      if (!c.evm.bytecode.object) continue; // interfaces and abstract contracts
      if (!c.abi.length) continue; // libraries of internal functions only (inlined where used)
      const rel = path.relative("chain/contracts", path.dirname(src));
      const file = path.join(ARTIFACTS, rel, `${name}.json`);
      const artifact = {
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        compiler: `solc-${solc.version()}`,
        contractName: name,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
        settings: input.settings,
        source: src,
      };
      files[file] = JSON.stringify(sortKeys(artifact), null, 2) + "\n";
    }
  }
  return files;
}

function existing(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? existing(path.join(dir, e.name)) : e.name.endsWith(".json") ? [path.join(dir, e.name)] : []
  );
}

const files = compile();
if (process.argv.includes("--check")) {
  const stale = [];
  for (const [file, text] of Object.entries(files)) {
    if (!fs.existsSync(file) || fs.readFileSync(file, "utf8") !== text) stale.push(path.relative(ROOT, file));
  }
  for (const file of existing(ARTIFACTS)) if (!(file in files)) stale.push(path.relative(ROOT, file) + " (extra)");
  if (stale.length) {
    process.stderr.write(`stale artifacts (run \`make contracts\`): ${stale.join(", ")}\n`);
    process.exit(1);
  }
  process.stdout.write(`artifacts fresh: ${Object.keys(files).length} contracts\n`);
} else {
  for (const file of existing(ARTIFACTS)) if (!(file in files)) fs.unlinkSync(file);
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
  }
  process.stdout.write(`wrote ${Object.keys(files).length} artifacts\n`);
}
