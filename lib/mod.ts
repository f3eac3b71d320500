/**
 * The shared library of the PostgreSQL scale-out workshop. Notebooks and
 * tests import everything from here.
 *
 * ```ts
 * import { startCluster, distribution, distributionPlot, show } from "../lib/mod.ts";
 * const cluster = await startCluster({ name: "demo", nodes: [{ name: "eu_db_1" }] });
 * ```
 *
 * @module
 */

export { configure, type ProviderKind, type Settings, settings } from "./config.ts";
export { ERROR_CODES, type ErrorCode, isWorkshopError, WorkshopError } from "./errors.ts";
export {
  Cluster,
  type ClusterOptions,
  type ClusterService,
  type NodeOptions,
  runningClusters,
  startCluster,
} from "./cluster.ts";
export type { Address, NodeProvider, NodeStartSpec, ProvidedNode } from "./providers/provider.ts";
export { type ClientOptions, connect, Node, type Sql, type StatementResult } from "./node.ts";
export {
  getRegion,
  type Region,
  type RegionId,
  REGIONS,
  roundTripMs,
  roundTripTable,
} from "./regions.ts";
export { type DelayProxy, type DelayProxyOptions, startDelayProxy } from "./latency_proxy.ts";
export {
  type ForeignLink,
  foreignServers,
  ident,
  linkNodes,
  type LinkOptions,
  literal,
  optionMap,
} from "./fdw.ts";
export {
  type Columns,
  createLayout,
  hashPartition,
  type Layout,
  listHashPartition,
  listPartition,
} from "./partitioning.ts";
export {
  distribution,
  type PartitionRow,
  partitionTree,
  rowsPerNode,
  type ShardRow,
  sharedTargets,
  totalRows,
} from "./inspect.ts";
export {
  callout,
  type Displayable,
  html,
  htmlTable,
  markdown,
  mimeBundle,
  show,
  table,
  type TableOptions,
  verify,
  verifyThat,
} from "./display.ts";
export { distributionPlot, type Figure, renderPlot } from "./plot.ts";
export { seededRandom, seededUuid } from "./random.ts";
export { type EnvironmentCheck, environmentChecks, preflight } from "./preflight.ts";
export { reclaimStaleRuns } from "./_runs.ts";
export {
  type BuiltinOp,
  type Operation,
  type OperationContext,
  percentile,
  type Sample,
  startWorkload,
  type StepMark,
  type StepSummary,
  summarize,
  Workload,
  type WorkloadOptions,
} from "./workload.ts";
export {
  latencyFromRegions,
  type RegionLatencyOptions,
  type RegionLatencyRow,
} from "./region_latency.ts";
export {
  latencyPercentiles,
  latencyTimeline,
  regionLatencyPlot,
  simulatedLatencyNote,
} from "./plot_latency.ts";
export {
  allExercises,
  type BoundExercise,
  type CheckResult,
  type CheckStatus,
  defineExercise,
  exercise,
  type ExerciseDefinition,
} from "./exercises.ts";

// Feature modules built for the lessons.
export { startTweetsApi, type TweetsApi, type TweetsApiOptions } from "./tweets_api.ts";
export {
  ApiError,
  type Tweet,
  tweetId,
  type TweetsReply,
  type TweetsRequest,
  type TweetsRoute,
  validateTweet,
} from "./tweets_api_endpoints.ts";
export {
  type ApiClient,
  apiClient,
  type ApiClientOptions,
  apiLatencyFromRegions,
  type ApiLatencyOptions,
  apiLatencyPlot,
  type ApiLatencyPlotOptions,
  type ApiReply,
} from "./tweets_api_client.ts";
export {
  type ShopCustomer,
  shopCustomers,
  type ShopCustomersOptions,
  type ShopLatencyOptions,
  shopLatencyRows,
  type ShopOptions,
  shopTimeline,
  startShop,
} from "./shop.ts";
export {
  addReplica,
  currentLsn,
  type LagMonitor,
  type LagMonitorOptions,
  lagPlot,
  type LagSample,
  lsnToBigInt,
  registerStandbyStarter,
  removeReplica,
  type ReplicaLsns,
  replicaLsns,
  type ReplicaOptions,
  setApplyDelay,
  type StandbyPlan,
  type StandbyStarter,
  startLagMonitor,
  waitForReplay,
  type WaitForReplayOptions,
} from "./replication.ts";
export { type RedisClient, type RedisOptions, type RedisService, startRedis } from "./redis.ts";
export {
  createRouter,
  type Freshness,
  LsnCache,
  lsnCache,
  type LsnCacheOptions,
  type LsnComparator,
  type RequestDb,
  type RequestInfo,
  type RouteDecision,
  Router,
  type RouterOptions,
  type RoutingMode,
} from "./router.ts";
export {
  type DockerProvider,
  dockerProvider,
  type DockerProviderOptions,
} from "./providers/docker.ts";
export {
  type ExternalProvider,
  externalProvider,
  type ExternalProviderOptions,
  type ExternalServer,
  loadExternalServers,
  parseExternalServers,
  type Placement,
} from "./providers/external.ts";
export {
  composeProvider,
  type ComposeProviderOptions,
  type ComposeService,
  composeServices,
} from "./providers/compose.ts";
export {
  type CockroachAvailable,
  type CockroachEndpoint,
  cockroachEndpoint,
  type CockroachNode,
  type CockroachOptions,
  type CockroachUnavailable,
} from "./providers/_docker_cockroach.ts";
export {
  type HoldOptions,
  holdWindow,
  type LoadReport,
  loadReport,
  type LoadReportOptions,
  type RemoteRenameOptions,
  renameRemote,
  type SwapOptions,
  type SwapProcedure,
  type SwapResult,
  swapTables,
} from "./repartition.ts";
export * as residency from "./residency.ts";

// Lesson modules (one per notebook): section resets and exercises.
export * as lesson01 from "./lessons/01_horizontal_scaling.ts";
export * as lesson02 from "./lessons/02_manual_sharding.ts";
export * as lesson03 from "./lessons/03_data_residency.ts";
export * as lesson04 from "./lessons/04_tweets_by_location.ts";
export * as lesson05 from "./lessons/05_read_replicas.ts";
