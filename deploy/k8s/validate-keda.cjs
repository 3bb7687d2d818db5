#!/usr/bin/env node
// Validates KEDA objects against KEDA's schemas (@kubernetes-models/keda, pinned in
// package.json), for tests/unit/test_k8s_manifests.py: kubernetes-validate knows only the
// built-in kinds. Reads a JSON array of objects on stdin, writes one JSON result per object
// ({kind, name, ok, error}) as an array on stdout, exits 1 when one is invalid, 2 when an
// object is of a KEDA kind this script does not know.
"use strict";

const keda = require("@kubernetes-models/keda/keda.sh/v1alpha1");

const KINDS = {
  ScaledObject: keda.ScaledObject,
  ScaledJob: keda.ScaledJob,
  TriggerAuthentication: keda.TriggerAuthentication,
  ClusterTriggerAuthentication: keda.ClusterTriggerAuthentication,
};

function validate(object) {
  const name = (object.metadata && object.metadata.name) || "";
  const Model = KINDS[object.kind];
  if (object.apiVersion !== "keda.sh/v1alpha1" || Model === undefined) {
    return { kind: object.kind, name, ok: false, error: `not a KEDA kind: ${object.apiVersion} ${object.kind}`, unknown: true };
  }
  try {
    new Model(object).validate();
    return { kind: object.kind, name, ok: true, error: null };
  } catch (err) {
    return { kind: object.kind, name, ok: false, error: String(err.message || err) };
  }
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(validate);
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exitCode = results.some((r) => r.unknown) ? 2 : results.some((r) => !r.ok) ? 1 : 0;
});
