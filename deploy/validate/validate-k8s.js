#!/usr/bin/env node
// Validates built-in Kubernetes objects with the schemas of the npm package kubernetes-models.
//
// Input (stdin): a JSON array of Kubernetes objects. Output (stdout): a JSON array with one entry
// per input object, in order: {"known": bool, "errors": [{"path": "spec.replicas", "message": ...}]}.
// "known" is false when kubernetes-models has no model for the object's apiVersion/kind (the caller
// decides whether that is an error, e.g. after checking its CRDs). Exit status 0 unless the input
// cannot be read; validation failures are reported in the output, not by the exit status.
'use strict';

const fs = require('fs');

function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return null;
  // Core group objects live at kubernetes-models/v1/<Kind>, the others at <group>/<version>/<Kind>.
  const modulePath = `kubernetes-models/${apiVersion}/${kind}`;
  try {
    const mod = require(modulePath);
    return mod[kind] || null;
  } catch (e) {
    const missing = e && (e.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED' ||
      (e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(modulePath)));
    if (missing) return null;
    throw e;
  }
}

// Ajv reports "/spec/template/spec/containers/0" plus, for a missing property, its name in params.
function fieldPath(err) {
  const parts = err.instancePath.split('/').filter((p) => p.length > 0);
  if (err.keyword === 'required' && err.params && err.params.missingProperty) {
    parts.push(err.params.missingProperty);
  }
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : (out ? '.' : '') + p.replace(/~1/g, '/').replace(/~0/g, '~');
  return out || '(root)';
}

function validateOne(obj) {
  const Model = modelFor(obj && obj.apiVersion, obj && obj.kind);
  if (!Model) return { known: false, errors: [] };
  try {
    new Model(obj).validate();
    return { known: true, errors: [] };
  } catch (e) {
    if (!e || !Array.isArray(e.errors)) throw e;
    return {
      known: true,
      errors: e.errors.map((err) => ({ path: fieldPath(err), message: err.message })),
    };
  }
}

const input = JSON.parse(fs.readFileSync(0, 'utf8'));
if (!Array.isArray(input)) {
  process.stderr.write('validate-k8s: expected a JSON array of objects on stdin\n');
  process.exit(2);
}
process.stdout.write(JSON.stringify(input.map(validateOne)));
