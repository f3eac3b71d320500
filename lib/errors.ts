/**
 * Errors with stable codes. Every error the kit raises on purpose is a
 * {@link WorkshopError}: a sentence-case message naming the thing and its
 * current value, a stable `code`, and a `fix` telling the reader what to do.
 * The README has the same table.
 *
 * @module
 */

/** Every stable error code, with what causes it and how to fix it. */
export const ERROR_CODES = {
  PORT_IN_USE: "A node was asked to listen on a port that something else holds",
  NODE_START_FAILED:
    "PostgreSQL exited while starting; the message carries the server log's last lines",
  NODE_NOT_READY: "A node did not accept connections within the startup timeout",
  UNKNOWN_NODE: "A node name that is not part of the cluster",
  DUPLICATE_NODE: "A node name that already exists with a different region or role",
  UNKNOWN_REGION: "A region id that is not in the region table",
  UNKNOWN_PROVIDER: "WORKSHOP_PROVIDER (or the provider option) names no provider",
  BINARIES_MISSING: "The embedded PostgreSQL binaries are not installed or not runnable",
  POSTGRES_USER_MISSING: "Running as root and no unprivileged OS user can run PostgreSQL",
  CLUSTER_STOPPED: "A cluster or node was used after it was stopped",
  INVALID_SETTING: "An environment variable or option holds a value the kit cannot use",
  JUPYTER_MISSING: "Jupyter (nbconvert/nbclient) is not installed",
  PREFLIGHT_FAILED: "An essential environment check failed before notebooks ran",
  IMPORT_FAILED: "A notebook imports a module that cannot be loaded",
  NOTEBOOK_FAILED: "A notebook cell raised an error while the report ran",
  FDW_LINK_FAILED: "A postgres_fdw link could not reach its target node",
  DOCKER_UNAVAILABLE: "The Docker provider was chosen but no Docker engine answers",
  IMAGE_UNAVAILABLE: "The Docker image is neither present nor pullable",
  REDIS_UNAVAILABLE: "No redis-server binary could be started",
  REPLICA_FAILED: "A streaming replica did not start streaming from its primary",
} as const;

/** A stable error code; see {@link ERROR_CODES}. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Options for {@link WorkshopError}. */
export interface WorkshopErrorOptions {
  /** What the reader should do about it. */
  fix: string;
  /** The underlying error, if any. */
  cause?: unknown;
  /** Extra lines shown under the message (a server log tail, for example). */
  details?: string;
}

/**
 * An error with a stable code and a fix.
 *
 * @example
 * ```ts
 * throw new WorkshopError("UNKNOWN_NODE", 'No node named "eu_db_9"', {
 *   fix: "Use one of: eu_db_1, eu_db_2",
 * });
 * ```
 */
export class WorkshopError extends Error {
  /** The stable code, for programs. */
  readonly code: ErrorCode;
  /** What to do about it, for people. */
  readonly fix: string;
  /** Extra detail, such as a log tail. */
  readonly details?: string;

  constructor(code: ErrorCode, message: string, options: WorkshopErrorOptions) {
    const text = `${message} [${code}]\n  fix: ${options.fix}` +
      (options.details ? `\n${indent(options.details)}` : "");
    super(text, { cause: options.cause });
    this.name = "WorkshopError";
    this.code = code;
    this.fix = options.fix;
    this.details = options.details;
  }
}

/** Whether `error` is a {@link WorkshopError}, optionally with the given code. */
export function isWorkshopError(error: unknown, code?: ErrorCode): error is WorkshopError {
  return error instanceof WorkshopError && (code === undefined || error.code === code);
}

function indent(text: string): string {
  return text.split("\n").map((line) => `  | ${line}`).join("\n");
}
