// Evaluates boolean flags through the OpenFeature Node SDK with the generic OFREP provider.
// stdin: {"baseUrl": ..., "key": ..., "evaluations": [{"flag": ..., "subject": ... | null, "default": bool}]}
// stdout: one JSON array of {flag, subject, value, reason, variant, errorCode} in the same order.
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));

await OpenFeature.setProviderAndWait(new OFREPProvider({
  baseUrl: request.baseUrl,
  headers: { Authorization: `Bearer ${request.key}` },
}));
const client = OpenFeature.getClient();

async function evaluate({ flag, subject, default: fallback }) {
  const context = subject === null || subject === undefined ? {} : { targetingKey: subject };
  const d = await client.getBooleanDetails(flag, Boolean(fallback), context);
  return { flag, subject, value: d.value, reason: d.reason, variant: d.variant ?? null, errorCode: d.errorCode ?? null };
}

// Sixteen requests in flight at a time: fast enough for ten thousand subjects, gentle on two cores.
const results = new Array(request.evaluations.length);
let next = 0;
async function worker() {
  while (next < request.evaluations.length) {
    const i = next++;
    results[i] = await evaluate(request.evaluations[i]);
  }
}
await Promise.all(Array.from({ length: 16 }, worker));
await OpenFeature.close();
process.stdout.write(JSON.stringify(results));
