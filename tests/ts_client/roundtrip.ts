// A round trip with the extreme values through a client generated from the schema
// (openapi-typescript types, openapi-fetch calls). Compiled with tsc --strict first,
// so the generated types must say what the API really sends: decimal strings.
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const [base, token, sessionId] = process.argv.slice(2);
const client = createClient<paths>({ baseUrl: base, headers: { Authorization: `Token ${token}` } });
const path = { session_id: sessionId };
const agentId = "9223372036854775807"; // 2**63-1: a JavaScript number would round it
const startedAtNs = "18446744073709551615"; // 2**64-1

function check(condition: boolean, message: string): void {
  if (!condition) {
    console.error(message);
    process.exit(1);
  }
}

const saved = await client.PUT("/api/sessions/{session_id}/", {
  params: { path },
  body: { agent_id: agentId, started_at_ns: startedAtNs },
});
check(saved.response.status === 201, `PUT answered ${saved.response.status}`);

const loaded = await client.GET("/api/sessions/{session_id}/", { params: { path } });
const record = loaded.data;
check(record !== undefined, `GET answered ${loaded.response.status}`);
const agent: string = record!.agent_id; // a string in the generated type, not a number
check(agent === agentId && record!.started_at_ns === startedAtNs, `GET returned ${JSON.stringify(record)}`);

const bulk = await client.POST("/api/sessions/bulk-load/", { body: { session_ids: [sessionId] } });
check(bulk.data?.sessions[0]?.agent_id === agentId, `bulk-load returned ${JSON.stringify(bulk.data)}`);

const deleted = await client.DELETE("/api/sessions/{session_id}/", { params: { path } });
check(deleted.response.status === 204, `DELETE answered ${deleted.response.status}`);
const gone = await client.GET("/api/sessions/{session_id}/", { params: { path } });
check(gone.response.status === 404, `GET after DELETE answered ${gone.response.status}`);
console.log("round trip ok");
