import assert from "node:assert/strict";
import {
  apiClient,
  ApiError,
  apiLatencyFromRegions,
  type Cluster,
  connect,
  isWorkshopError,
  type Node,
  startCluster,
  startTweetsApi,
  tweetId,
  type TweetsApiOptions,
  validateTweet,
} from "../lib/mod.ts";
import { withLatencyScale } from "./_helpers.ts";

const EUROPE: TweetsApiOptions = {
  name: "europe_api",
  region: "eu-central-1",
  database: "eutweets",
  user: "europe",
  password: "eupassword",
  table: "europe_tweets",
  locations: ["europe"],
};

/** A europe node with the role europe, its database eutweets and europe_tweets (3 rows). */
async function europeNode(cluster: Cluster): Promise<Node> {
  const node = await cluster.addNode({ name: "europe", region: "eu-central-1" });
  await node.exec(`CREATE ROLE europe LOGIN PASSWORD 'eupassword'`);
  await node.exec(`CREATE DATABASE eutweets OWNER europe`);
  const sql = connect({ host: node.host, port: node.port }, "europe", "eupassword", {
    database: "eutweets",
  });
  try {
    await sql.unsafe(`
      CREATE TABLE europe_tweets (
        id serial4 NOT NULL, "location" varchar NOT NULL, "text" varchar NOT NULL,
        owner_id int4 NOT NULL, like_count int4 NOT NULL);
      INSERT INTO europe_tweets (location, text, owner_id, like_count)
        VALUES ('europe', 'one', 1, 0), ('europe', 'two', 2, 5), ('europe', 'three', 3, 0);`)
      .simple();
  } finally {
    await sql.end();
  }
  return node;
}

/** Rows of europe_tweets, counted as the superuser. */
async function rowsIn(node: Node): Promise<number> {
  const sql = connect({ host: node.host, port: node.port }, node.user, node.password, {
    database: "eutweets",
  });
  try {
    const [{ n }] = await sql`SELECT count(*) AS n FROM europe_tweets`;
    return n as number;
  } finally {
    await sql.end();
  }
}

async function call(
  url: string,
  method: string,
  body?: string,
): Promise<{ status: number; body: any; headers: Headers }> {
  const client = Deno.createHttpClient({});
  try {
    const init: RequestInit & { client: Deno.HttpClient } = { method, body, client };
    const response = await fetch(url, init);
    return {
      status: response.status,
      body: JSON.parse(await response.text()),
      headers: response.headers,
    };
  } finally {
    client.close();
  }
}

Deno.test("startTweetsApi() lists, gets and posts tweets in its table as its own role", async () => {
  await using cluster = await startCluster({ name: "t-api-ok" });
  const europe = await europeNode(cluster);
  const api = cluster.addService(await startTweetsApi(europe, EUROPE));
  assert.match(api.url, /^http:\/\/127\.0\.0\.1:\d+$/);

  const list = await call(`${api.url}/tweets?limit=2`, "GET");
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.map((t: { text: string }) => t.text), ["three", "two"]);

  const posted = await call(
    `${api.url}/tweets`,
    "POST",
    JSON.stringify({ text: "Servus", owner_id: 42 }),
  );
  assert.equal(posted.status, 201);
  assert.deepEqual(
    { ...posted.body, id: undefined },
    { id: undefined, location: "europe", text: "Servus", owner_id: 42, like_count: 0 },
  );
  assert.equal(posted.headers.get("location"), `/tweets/${posted.body.id}`);
  assert.equal(await rowsIn(europe), 4);

  const one = await call(`${api.url}/tweets/${posted.body.id}`, "GET");
  assert.equal(one.status, 200);
  assert.deepEqual(one.body, posted.body);

  const [session] = await europe.sql`
    SELECT usename, datname FROM pg_stat_activity WHERE application_name = 'europe_api'`;
  assert.deepEqual({ ...session }, { usename: "europe", datname: "eutweets" });
});

Deno.test("startTweetsApi() answers bad input with a 4xx JSON error and writes nothing", async () => {
  await using cluster = await startCluster({ name: "t-api-bad" });
  const europe = await europeNode(cluster);
  const api = cluster.addService(await startTweetsApi(europe, EUROPE));
  const cases: [string, string, string | undefined, number, RegExp][] = [
    ["POST", "/tweets", `{"text": "oops"`, 400, /not valid JSON/],
    ["POST", "/tweets", "", 400, /body is empty/],
    ["POST", "/tweets", `[1, 2]`, 400, /JSON object.*got an array/],
    ["POST", "/tweets", `"hi"`, 400, /JSON object.*got a string/],
    ["POST", "/tweets", `{"owner_id": 1}`, 422, /text must be a non-empty string/],
    ["POST", "/tweets", `{"text": "   ", "owner_id": 1}`, 422, /text must be/],
    ["POST", "/tweets", JSON.stringify({ text: "x".repeat(281), owner_id: 1 }), 422, /at most 280/],
    ["POST", "/tweets", `{"text": "hi", "owner_id": 1.5}`, 422, /owner_id must be a whole number/],
    ["POST", "/tweets", `{"text": "hi", "owner_id": "7"}`, 422, /owner_id.*got "7"/],
    ["POST", "/tweets", `{"text": "hi", "owner_id": 0}`, 422, /owner_id/],
    ["POST", "/tweets", `{"text": "hi", "owner_id": 1, "likes": 9}`, 422, /unknown field "likes"/],
    [
      "POST",
      "/tweets",
      `{"text": "hi", "owner_id": 1, "location": "usa"}`,
      422,
      /location "usa" is not stored by "europe_api"/,
    ],
    ["POST", "/tweets", `{"text": "hi", "owner_id": 1, "location": 3}`, 422, /location must be/],
    ["POST", "/tweets", JSON.stringify({ text: "x".repeat(17_000), owner_id: 1 }), 413, /limit/],
    ["GET", "/tweets/999999", undefined, 404, /No tweet with id 999999 in europe_tweets/],
    ["GET", "/tweets/abc", undefined, 400, /whole number.*got "abc"/],
    ["GET", "/tweets/0", undefined, 400, /whole number/],
    ["GET", "/tweets/99999999999", undefined, 400, /whole number/],
    ["GET", "/tweets/1;DROP TABLE europe_tweets", undefined, 400, /whole number/],
    ["GET", "/tweets?limit=abc", undefined, 400, /limit must be/],
    ["GET", "/tweets?limit=1001", undefined, 400, /limit must be/],
    ["GET", "/nowhere", undefined, 404, /No route for GET \/nowhere/],
    ["DELETE", "/tweets", undefined, 405, /DELETE is not allowed on \/tweets; use GET, POST/],
    ["POST", "/tweets/1", `{}`, 405, /use GET/],
  ];
  for (const [method, path, body, status, error] of cases) {
    const reply = await call(`${api.url}${path}`, method, body);
    assert.equal(reply.status, status, `${method} ${path} ${body?.slice(0, 40)}`);
    assert.match(reply.body.error, error, `${method} ${path}`);
  }
  assert.equal(await rowsIn(europe), 3, "no bad request wrote a row");
  const methodReply = await call(`${api.url}/tweets`, "PUT");
  assert.equal(methodReply.headers.get("allow"), "GET, POST");
});

Deno.test("startTweetsApi() without locations requires a location in the body", async () => {
  await using cluster = await startCluster({ name: "t-api-any" });
  const europe = await europeNode(cluster);
  const api = cluster.addService(
    await startTweetsApi(europe, { ...EUROPE, name: "any_api", locations: [] }),
  );
  const missing = await call(`${api.url}/tweets`, "POST", `{"text": "hi", "owner_id": 1}`);
  assert.equal(missing.status, 422);
  assert.match(missing.body.error, /location is required/);
  const given = await call(
    `${api.url}/tweets`,
    "POST",
    `{"text": "hi", "owner_id": 1, "location": "mars"}`,
  );
  assert.equal(given.status, 201);
  assert.equal(given.body.location, "mars");
});

Deno.test("startTweetsApi() refuses to start on a bad login, a missing table or missing privileges", async () => {
  await using cluster = await startCluster({ name: "t-api-refuse" });
  const europe = await europeNode(cluster);
  await assert.rejects(
    startTweetsApi(europe, { ...EUROPE, password: "wrong" }),
    (e: unknown) =>
      isWorkshopError(e, "INVALID_SETTING") &&
      /logging in to database "eutweets" on node "europe" as "europe" failed/.test(e.message),
  );
  await assert.rejects(
    startTweetsApi(europe, { ...EUROPE, table: "us_tweets" }),
    (e: unknown) =>
      isWorkshopError(e, "INVALID_SETTING") && /no table "us_tweets"/.test(e.message) &&
      /europe_tweets/.test(e.fix),
  );
  await europe.exec(`CREATE ROLE reader LOGIN PASSWORD 'readerpassword'`);
  const owner = connect({ host: europe.host, port: europe.port }, "europe", "eupassword", {
    database: "eutweets",
  });
  await owner`GRANT SELECT ON europe_tweets TO reader`;
  await owner.end();
  await assert.rejects(
    startTweetsApi(europe, { ...EUROPE, user: "reader", password: "readerpassword" }),
    (e: unknown) =>
      isWorkshopError(e, "INVALID_SETTING") && /lacks INSERT on "europe_tweets"/.test(e.message),
  );
  await assert.rejects(
    startTweetsApi(europe, { ...EUROPE, name: "bad name" }),
    (e: unknown) => isWorkshopError(e, "INVALID_SETTING"),
  );
  await assert.rejects(
    startTweetsApi(europe, { ...EUROPE, table: "europe_tweets; DROP TABLE europe_tweets" }),
    (e: unknown) => isWorkshopError(e, "INVALID_SETTING") && /Invalid table/.test(e.message),
  );
  assert.equal(await rowsIn(europe), 3);
  assert.equal(cluster.services.length, 0);
});

Deno.test("cluster.stop() stops a tweets API added with addService()", async () => {
  const cluster = await startCluster({ name: "t-api-stop" });
  let url = "";
  try {
    const europe = await europeNode(cluster);
    const api = cluster.addService(await startTweetsApi(europe, EUROPE));
    url = api.url;
    assert.equal((await call(`${url}/tweets?limit=1`, "GET")).status, 200);
  } finally {
    await cluster.stop();
  }
  await assert.rejects(call(`${url}/tweets`, "GET"));
});

Deno.test("startTweetsApi() answers 503 with a message when its database is down", async () => {
  await using cluster = await startCluster({ name: "t-api-down" });
  const europe = await europeNode(cluster);
  const api = cluster.addService(await startTweetsApi(europe, EUROPE));
  await europe.stop();
  const reply = await call(`${api.url}/tweets`, "GET");
  assert.equal(reply.status, 503);
  assert.match(reply.body.error, /database of this API is unavailable/);
  await europe.restart();
});

Deno.test("startTweetsApi() routes add endpoints; ApiError answers 4xx and other errors 500", async () => {
  await using cluster = await startCluster({ name: "t-api-routes" });
  const europe = await europeNode(cluster);
  const api = cluster.addService(
    await startTweetsApi(europe, {
      ...EUROPE,
      routes: [{
        method: "POST",
        path: "/tweets/:id/like",
        handle: async ({ params, sql, table }) => {
          const id = tweetId(params.id);
          const [tweet] = await sql`
            UPDATE ${sql(table)} SET like_count = like_count + 1 WHERE id = ${id} RETURNING *`;
          if (!tweet) throw new ApiError(404, `No tweet with id ${id}`);
          return { body: tweet };
        },
      }, {
        method: "GET",
        path: "/broken",
        handle: () => {
          throw new Error("boom");
        },
      }],
    }),
  );
  const liked = await call(`${api.url}/tweets/2/like`, "POST");
  assert.equal(liked.status, 200);
  assert.equal(liked.body.like_count, 6);
  assert.equal((await call(`${api.url}/tweets/77/like`, "POST")).status, 404);
  assert.equal((await call(`${api.url}/tweets/x/like`, "POST")).status, 400);
  const broken = await call(`${api.url}/broken`, "GET");
  assert.equal(broken.status, 500);
  assert.match(broken.body.error, /boom/);
  const none = await call(`${api.url}/nowhere`, "GET");
  assert.match(none.body.error, /POST \/tweets\/:id\/like/, "the 404 lists the extra route");
});

Deno.test("apiClient() from another region pays the simulated round trip; from the API's region it does not", async () => {
  await withLatencyScale(1, async () => {
    await using cluster = await startCluster({ name: "t-api-latency" });
    const europe = await europeNode(cluster);
    const api = cluster.addService(await startTweetsApi(europe, EUROPE));
    const local = await apiClient(cluster, { service: "europe_api" });
    assert.equal(local.url, api.url, "same region: no proxy");
    local.close();
    const rows = await apiLatencyFromRegions(cluster, {
      service: "europe_api",
      regions: ["us-east-1"],
      repeat: 2,
    });
    assert.equal(rows.length, 1);
    // Frankfurt <-> N. Virginia is a 90 ms round trip; a warm GET takes one.
    assert.ok(rows[0].ms >= 90, `a transatlantic GET took only ${rows[0].ms.toFixed(1)} ms`);
    assert.deepEqual(
      [rows[0].region, rows[0].step, rows[0].query],
      ["us-east-1", "europe_api", "GET /tweets?limit=20"],
    );
  });
});

Deno.test("validateTweet() fills the API's location and lists every problem at once", () => {
  assert.deepEqual(validateTweet({ text: "hi", owner_id: 1 }, { locations: ["europe"] }), {
    text: "hi",
    owner_id: 1,
    location: "europe",
  });
  assert.throws(
    () => validateTweet({ text: 5, owner_id: -1, extra: true }, { locations: ["europe"] }),
    (e: unknown) =>
      e instanceof ApiError && e.status === 422 && /unknown field "extra"/.test(e.message) &&
      /text must be/.test(e.message) && /owner_id must be/.test(e.message),
  );
});
