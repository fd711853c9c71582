// Runs an ONNX model in ONNX Runtime (onnxruntime-node, CPU) on a batch of
// float32 inputs and writes the float32 outputs; `limpq export --verify` and
// the deployment tests compare them with limpq's own forward pass.
//
//   node tools/ort/run_onnx.js MODEL.onnx INPUT.f32 N C H W OUTPUT.f32 [LEVEL]
//
// LEVEL is ONNX Runtime's graph optimization level: all (the default, what a
// deployment runs), extended, basic or disabled (the graph as written).
//
// Prints one JSON line: the runtime version, output shape and seconds.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const args = process.argv.slice(2);
  if (args.length !== 7 && args.length !== 8) {
    console.error('usage: run_onnx.js MODEL.onnx INPUT.f32 N C H W OUTPUT.f32 [all|extended|basic|disabled]');
    process.exit(2);
  }
  const [model, input, ...rest] = args;
  const dims = rest.slice(0, 4).map(Number);
  const output = rest[4];
  const level = rest[5] || 'all';
  const bytes = fs.readFileSync(input);
  const expected = dims.reduce((a, b) => a * b, 1) * 4;
  if (bytes.length !== expected) {
    throw new Error(`${input}: ${bytes.length} bytes, expected ${expected} for float32 ${dims.join('x')}`);
  }
  const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  const session = await ort.InferenceSession.create(model, {executionProviders: ['cpu'], graphOptimizationLevel: level});
  const start = process.hrtime.bigint();
  const result = await session.run({[session.inputNames[0]]: new ort.Tensor('float32', data, dims)});
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const logits = result[session.outputNames[0]];
  fs.writeFileSync(output, Buffer.from(logits.data.buffer, logits.data.byteOffset, logits.data.byteLength));
  console.log(JSON.stringify({runtime: 'onnxruntime-node', version: ort.env.versions.common, dims: logits.dims,
                              seconds}));
}

main().catch((e) => {
  console.error(`run_onnx.js: ${e.message}`);
  process.exit(1);
});
