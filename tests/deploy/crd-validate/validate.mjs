#!/usr/bin/env node
// Validates rendered KEDA and prometheus-operator objects offline against the upstream API schemas,
// as compiled into the pinned @kubernetes-models packages (see README.md here for the versions).
//
//   node validate.mjs < objects.json     (a JSON array of Kubernetes objects)
//
// Prints one JSON line per object, in input order:
//   {"object": "ScaledObject/vbw", "apiVersion": "keda.sh/v1alpha1", "result": "valid", "errors": []}
// result is "valid", "invalid" (errors say where and why) or "skipped" (not a kind from these
// CRDs: core kinds are the caller's business). Exit 0 when nothing is invalid, 1 when something
// is, 2 when the input or the installation is unusable.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

// API group -> the package whose modules are laid out as <package>/<group>/<version>/<Kind>.
const PACKAGES = {
  "keda.sh": "@kubernetes-models/keda",
  "eventing.keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

function die(message) {
  process.stderr.write(`validate.mjs: ${message}\n`);
  process.exit(2);
}

function checkInstalled() {
  const require = createRequire(import.meta.url);
  for (const pkg of new Set(Object.values(PACKAGES))) {
    try {
      require.resolve(`${pkg}/package.json`);
    } catch {
      die(`${pkg} is not installed: run scripts/setup.sh dev (npm ci in tests/deploy/crd-validate)`);
    }
  }
}

const models = new Map();

async function modelFor(apiVersion, kind) {
  const key = `${apiVersion}/${kind}`;
  if (!models.has(key)) {
    const pkg = PACKAGES[apiVersion.split("/")[0]];
    let model = null;
    try {
      model = (await import(`${pkg}/${key}`))[kind] ?? null;
    } catch (e) {
      if (e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED" && e.code !== "ERR_MODULE_NOT_FOUND") throw e;
    }
    models.set(key, model);
  }
  return models.get(key);
}

// The validators throw an Error whose `errors` are Ajv's, with JSON-pointer instancePaths.
function schemaErrors(Model, obj) {
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    return e.errors;
  }
}

const pointer = (path) => path.map((p) => `/${String(p).replace(/~/g, "~0").replace(/\//g, "~1")}`).join("");
const errorKey = (e) => `${e.instancePath} ${e.schemaPath} ${e.message}`;

function withValue(obj, path, value) {
  const copy = structuredClone(obj);
  let node = copy;
  for (const p of path.slice(0, -1)) node = node[p];
  node[path.at(-1)] = value;
  return copy;
}

// The compiled schemas check types, patterns, enums and required fields but let unknown fields
// through (no additionalProperties: false), while kubectl's default strict field validation has
// the API server reject them: a typo must fail here too. A field is one the schema knows when it
// already has an error of its own, or when a value of the wrong type in its place (true, then [])
// brings a new one; no field of ours is free-form, so one that takes anything is a typo. Fields
// under an unknown one are not listed.
function unknownFields(Model, obj) {
  const errors = schemaErrors(Model, obj);
  const baseline = new Set(errors.map(errorKey));
  const known = (path) => {
    const at = pointer(path);
    if (errors.some((e) => e.instancePath === at || e.instancePath.startsWith(`${at}/`))) return true;
    return [true, []].some((probe) =>
      schemaErrors(Model, withValue(obj, path, probe)).some((e) => !baseline.has(errorKey(e))),
    );
  };
  const unknown = [];
  const walk = (node, path) => {
    if (Array.isArray(node)) {
      node.forEach((v, i) => walk(v, [...path, i]));
    } else if (node !== null && typeof node === "object") {
      for (const key of Object.keys(node)) {
        const p = [...path, key];
        if (known(p)) walk(node[key], p);
        else unknown.push(pointer(p));
      }
    }
  };
  walk(obj, []);
  return unknown;
}

function describe(e) {
  const extra = e.params?.allowedValues ? ` ${JSON.stringify(e.params.allowedValues)}` : "";
  return `${e.instancePath || "/"}: ${e.message}${extra}`;
}

async function check(obj) {
  const apiVersion = String(obj?.apiVersion ?? "");
  const kind = String(obj?.kind ?? "");
  const result = { object: `${kind}/${obj?.metadata?.name ?? "?"}`, apiVersion, result: "skipped", errors: [] };
  if (!(apiVersion.split("/")[0] in PACKAGES)) return result;
  const Model = await modelFor(apiVersion, kind);
  if (Model === null) {
    result.errors = [`no schema for ${kind} in ${apiVersion} (${PACKAGES[apiVersion.split("/")[0]]})`];
  } else {
    const errors = schemaErrors(Model, obj).map(describe);
    errors.push(...unknownFields(Model, obj).map((p) => `${p}: unknown field`));
    result.errors = [...new Set(errors)];
  }
  result.result = result.errors.length ? "invalid" : "valid";
  return result;
}

checkInstalled();
let objects;
try {
  objects = JSON.parse(readFileSync(0, "utf8"));
} catch (e) {
  die(`stdin is not JSON: ${e.message}`);
}
if (!Array.isArray(objects)) die("stdin must be a JSON array of Kubernetes objects");
let invalid = 0;
for (const obj of objects) {
  const r = await check(obj);
  if (r.result === "invalid") invalid++;
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
process.exit(invalid ? 1 : 0);
