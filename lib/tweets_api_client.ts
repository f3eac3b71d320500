/**
 * Users calling a tweets API: {@link apiClient} is a user in one region
 * (its requests cross the simulated latency between the user's region and
 * the API's, through `cluster.routeToService()`), and
 * {@link apiLatencyFromRegions} / {@link apiLatencyPlot} measure and chart
 * what users in each region wait.
 *
 * @module
 */

import type { Cluster } from "./cluster.ts";
import { settings } from "./config.ts";
import { WorkshopError } from "./errors.ts";
import { type Figure, renderPlot } from "./plot.ts";
import { simulatedLatencyNote } from "./plot_latency.ts";
import type { RegionLatencyRow } from "./region_latency.ts";
import { getRegion, type RegionId } from "./regions.ts";
import { percentile } from "./workload.ts";

/** One answer from an {@link ApiClient}. */
export interface ApiReply<T = unknown> {
  /** HTTP status. */
  status: number;
  /** Parsed JSON body. */
  body: T;
  /** Time from sending the request to reading the whole answer, in ms. */
  ms: number;
}

/** A user in one region calling one API (through the simulated latency). */
export interface ApiClient extends AsyncDisposable {
  /** The API's service name. */
  readonly service: string;
  /** Region the user sits in. */
  readonly from: RegionId;
  /** Base URL the user calls (a delay proxy across regions). */
  readonly url: string;
  /** Sends a request: an object body goes as JSON, a string body as it is (to try malformed input). */
  request<T = unknown>(method: string, path: string, body?: unknown): Promise<ApiReply<T>>;
  /** `GET path`. */
  get<T = unknown>(path: string): Promise<ApiReply<T>>;
  /** `POST path` with a JSON body. */
  post<T = unknown>(path: string, body: unknown): Promise<ApiReply<T>>;
  /** Closes the user's connections. Idempotent. */
  close(): void;
}

/** Options for {@link apiClient}. */
export interface ApiClientOptions {
  /** Service name of the API, e.g. "europe_api". */
  service: string;
  /** Region the user sits in. @default the API's region */
  from?: RegionId;
}

/**
 * A user in region `from` calling a cluster's API. Requests cross the
 * simulated latency between the user's region and the API's; the
 * connection is kept alive between requests, like a browser's.
 *
 * @throws {WorkshopError} `UNKNOWN_NODE` when the cluster has no such service.
 * @example
 * ```ts
 * const berlin = await apiClient(cluster, { service: "europe_api", from: "eu-central-1" });
 * const { status, body } = await berlin.post("/tweets", { text: "Servus", owner_id: 7 });
 * berlin.close();
 * ```
 */
export async function apiClient(cluster: Cluster, options: ApiClientOptions): Promise<ApiClient> {
  const service = cluster.service(options.service);
  const from = getRegion(options.from ?? service.region).id;
  const address = await cluster.routeToService(from, service.name);
  const url = `http://${address.host}:${address.port}`;
  const http = Deno.createHttpClient({});
  let closed = false;
  const request = async <T>(method: string, path: string, body?: unknown) => {
    if (closed) {
      throw new WorkshopError("CLUSTER_STOPPED", `The client of "${service.name}" is closed`, {
        fix: "Make a new one with apiClient()",
      });
    }
    const started = performance.now();
    const init: RequestInit & { client: Deno.HttpClient } = {
      method,
      client: http,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    };
    const response = await fetch(`${url}${path}`, init);
    const text = await response.text();
    const ms = performance.now() - started;
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, body: parsed as T, ms };
  };
  const close = () => {
    if (closed) return;
    closed = true;
    http.close();
  };
  return {
    service: service.name,
    from,
    url,
    request,
    get: (path) => request("GET", path),
    post: (path, body) => request("POST", path, body),
    close,
    [Symbol.asyncDispose]: () => Promise.resolve(close()),
  };
}

/** Options for {@link apiLatencyFromRegions}. */
export interface ApiLatencyOptions {
  /** Service name of the API. */
  service: string;
  /** Path requested with GET. @default "/tweets?limit=20" */
  path?: string;
  /** User regions. @default the regions of the cluster's nodes */
  regions?: RegionId[];
  /** Measurements per region after one warm-up request. @default 5 */
  repeat?: number;
  /** Step label of the rows (the chart's panels). @default the service name */
  step?: string;
}

/**
 * Users in each region call `GET path` on an API; returns the median
 * latency per region, ready for `regionLatencyPlot()`.
 *
 * @throws {Error} when a request does not answer 2xx (a latency of an error is no latency).
 * @example
 * ```ts
 * const rows = await apiLatencyFromRegions(cluster, { service: "europe_api", regions: ["eu-central-1", "us-east-1"] });
 * await show(regionLatencyPlot(rows));
 * ```
 */
export async function apiLatencyFromRegions(
  cluster: Cluster,
  options: ApiLatencyOptions,
): Promise<RegionLatencyRow[]> {
  const path = options.path ?? "/tweets?limit=20";
  const regions = options.regions ?? [...new Set(cluster.nodes.map((n) => n.region))];
  const repeat = options.repeat ?? 5;
  const rows: RegionLatencyRow[] = [];
  for (const region of regions) {
    const user = await apiClient(cluster, { service: options.service, from: region });
    try {
      const samples: number[] = [];
      for (let i = 0; i <= repeat; i++) {
        const reply = await user.get<{ error?: string }>(path);
        if (reply.status < 200 || reply.status > 299) {
          throw new Error(
            `GET ${path} on "${options.service}" from ${region} answered ${reply.status}: ${
              reply.body?.error ?? JSON.stringify(reply.body)
            }`,
          );
        }
        if (i > 0) samples.push(reply.ms);
      }
      const sorted = [...samples].sort((a, b) => a - b);
      rows.push({
        region,
        step: options.step ?? options.service,
        query: `GET ${path}`,
        ms: percentile(sorted, 50),
        samples,
        latencyScale: settings().latencyScale,
      });
    } finally {
      user.close();
    }
  }
  return rows;
}

/** Options for {@link apiLatencyPlot}. */
export interface ApiLatencyPlotOptions {
  /** Title above the chart. */
  title?: string;
  /** Line under the title. @default the simulated-latency note */
  subtitle?: string;
}

/**
 * Median latency per API, one panel per user region: who waits for what.
 *
 * @param rows Rows from {@link apiLatencyFromRegions} (the step is the API).
 * @example
 * ```ts
 * await show(apiLatencyPlot(rows, { title: "GET /tweets from each region" }));
 * ```
 */
export function apiLatencyPlot(
  rows: readonly RegionLatencyRow[],
  options: ApiLatencyPlotOptions = {},
): Promise<Figure> {
  const apis = [...new Set(rows.map((r) => r.step))];
  const users = [...new Set(rows.map((r) => `users in ${getRegion(r.region).city}`))];
  const data = rows.map((r) => ({
    api: r.step,
    user: `users in ${getRegion(r.region).city}`,
    ms: r.ms,
  }));
  const max = Math.max(1, ...data.map((d) => d.ms));
  const scale = rows[0]?.latencyScale ?? settings().latencyScale;
  return renderPlot((Plot) => ({
    title: options.title,
    subtitle: options.subtitle ?? simulatedLatencyNote(scale),
    height: 50 + users.length * (apis.length * 22 + 14),
    marginLeft: 90,
    marginRight: 150,
    x: { label: "median latency (ms)", grid: true, domain: [0, max * 1.2] },
    y: { label: null, domain: apis },
    fy: { label: null, domain: users },
    color: { legend: true, label: "API", domain: apis },
    marks: [
      Plot.barX(data, { fy: "user", y: "api", x: "ms", fill: "api" }),
      Plot.text(data, {
        fy: "user",
        y: "api",
        x: "ms",
        text: (d: { ms: number }) => `${d.ms.toFixed(1)} ms`,
        textAnchor: "start",
        dx: 4,
      }),
      Plot.ruleX([0]),
    ],
  }));
}
