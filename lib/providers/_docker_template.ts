/**
 * A data-directory template for the docker provider, like the embedded
 * provider's initdb template: `initdb` runs once per image (in a throwaway
 * container), the stopped data directory is kept as a tar in the cache
 * directory, and each new node gets a copy put into its volume before it
 * starts (`<cacheDir>/docker-templates/<image id>-v2.tar.gz`, ~5 MB). The
 * image's entrypoint then skips initialisation, so a node is up
 * in a fraction of the time (no initdb, no temporary server).
 *
 * @module
 */

import { settings } from "../config.ts";
import type { RuntimeClient } from "./_docker.ts";

/** A cached data directory and the superuser password it was made with. */
export interface DockerTemplate {
  /** Path of the gzipped tar (its root entry is `data/`). */
  tar: string;
  /** The template's `postgres` password (replaced on each node at start). */
  password: string;
}

const FORMAT = "v2";
const templates = new Map<string, Promise<DockerTemplate>>();

/**
 * The template for `image`, created on first use (about one container start).
 *
 * @param labels Labels for the throwaway container (the run's, so the reaper covers it).
 */
export function dockerTemplate(
  client: RuntimeClient,
  image: string,
  labels: Record<string, string>,
): Promise<DockerTemplate> {
  let pending = templates.get(image);
  if (!pending) {
    pending = loadOrCreate(client, image, labels).catch((error) => {
      templates.delete(image);
      throw error;
    });
    templates.set(image, pending);
  }
  return pending;
}

async function loadOrCreate(
  client: RuntimeClient,
  image: string,
  labels: Record<string, string>,
): Promise<DockerTemplate> {
  const docker = client.container.dockerode;
  const imageId = ((await docker.getImage(image).inspect()).Id as string).replace(/^sha256:/, "");
  const dir = `${settings().cacheDir}/docker-templates`;
  const tar = `${dir}/${imageId.slice(0, 16)}-${FORMAT}.tar.gz`;
  const manifest = `${tar}.manifest`;
  const known = await Deno.readTextFile(manifest).then(JSON.parse).catch(() => undefined);
  if (known?.password && await Deno.stat(tar).then((s) => s.size > 0, () => false)) {
    return { tar, password: known.password };
  }
  await Deno.mkdir(dir, { recursive: true });
  const password = crypto.randomUUID().replaceAll("-", "");
  const container = await docker.createContainer({
    Image: image,
    name: `pgsw-template-${crypto.randomUUID().slice(0, 8)}`,
    Labels: { ...labels, "io.pgsw.role": "template" },
    Env: [
      `POSTGRES_PASSWORD=${password}`,
      "POSTGRES_INITDB_ARGS=--no-sync -E UTF8 --no-locale --wal-segsize=1",
    ],
    HostConfig: { NetworkMode: "none" },
  });
  try {
    await container.start();
    const deadline = Date.now() + settings().startupTimeoutMs;
    while (true) {
      const log = String(
        await container.logs({ stdout: true, stderr: true, follow: false }) as unknown,
      );
      if ((log.match(/ready to accept connections/g) ?? []).length >= 2) break;
      const state = (await container.inspect()).State;
      if (!state.Running || Date.now() > deadline) {
        throw new Error(`template container of ${image} did not initialise: ${log.slice(-500)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await container.stop({ t: 30 }); // SIGINT: a clean shutdown, so the copy needs no recovery
    const archive = await container.getArchive({ path: "/var/lib/postgresql/data" });
    const partial = `${tar}.partial-${Deno.pid}`;
    // Gzipped (mostly empty pages: ~10x smaller); Docker unpacks it when it is put into a container.
    const file = await Deno.open(partial, { write: true, create: true, truncate: true });
    const gzip = new CompressionStream("gzip") as unknown as TransformStream<
      Uint8Array,
      Uint8Array<ArrayBuffer>
    >;
    await ReadableStream.from(archive as AsyncIterable<Uint8Array>).pipeThrough(gzip)
      .pipeTo(file.writable);
    await Deno.rename(partial, tar);
    await Deno.writeTextFile(`${manifest}.tmp`, JSON.stringify({ password, image, imageId }));
    await Deno.chmod(`${manifest}.tmp`, 0o600);
    await Deno.rename(`${manifest}.tmp`, manifest);
    return { tar, password };
  } finally {
    await container.remove({ force: true, v: true }).catch(() => {});
  }
}
