/**
 * Notebooks as plain text, and clean notebooks.
 *
 * The text ("percent") format, for editing a notebook in a text editor:
 *
 * ```
 * // %% [markdown]
 * // # Title
 * //
 * // Some text.
 *
 * // %%
 * const x = 1;
 * ```
 *
 * Code cells start with `// %%`, markdown cells with `// %% [markdown]` and
 * every markdown line is prefixed `// `. One blank line separates cells.
 * Anything a plain notebook would not have (a cell id that is not the
 * default, cell metadata, extra notebook metadata) goes as JSON after the
 * marker, so `.ipynb -> text -> .ipynb` and `text -> .ipynb -> text` are
 * exact for clean notebooks.
 *
 * CLI (`deno task nb ...`):
 *
 * ```
 * deno task nb to-text notebooks/01_x.ipynb      # writes notebooks/01_x.ts.txt
 * deno task nb to-ipynb notebooks/01_x.ts.txt    # writes notebooks/01_x.ipynb
 * deno task nb clean notebooks/*.ipynb           # strips outputs in place
 * ```
 *
 * @module
 */

import { KERNEL_DISPLAY_NAME, KERNEL_NAME } from "./kernelspec.ts";

/** One output of a code cell, as nbformat 4 stores it. */
export interface NotebookOutput {
  output_type: "stream" | "display_data" | "execute_result" | "error" | "update_display_data";
  name?: "stdout" | "stderr";
  text?: string | string[];
  data?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
  execution_count?: number | null;
  ename?: string;
  evalue?: string;
  traceback?: string[];
}

/** One cell of an nbformat 4 notebook. */
export interface NotebookCell {
  id?: string;
  cell_type: "code" | "markdown" | "raw";
  source: string | string[];
  metadata: Record<string, unknown>;
  outputs?: NotebookOutput[];
  execution_count?: number | null;
  attachments?: Record<string, unknown>;
}

/** An nbformat 4 notebook. */
export interface Notebook {
  cells: NotebookCell[];
  metadata: Record<string, unknown>;
  nbformat: number;
  nbformat_minor: number;
}

/** The notebook metadata every notebook of this project carries. */
export const NOTEBOOK_METADATA: Readonly<Record<string, unknown>> = {
  kernelspec: { display_name: KERNEL_DISPLAY_NAME, language: "typescript", name: KERNEL_NAME },
  language_info: {
    codemirror_mode: "typescript",
    file_extension: ".ts",
    mimetype: "text/x.typescript",
    name: "typescript",
    nbconvert_exporter: "script",
    pygments_lexer: "typescript",
  },
};

/** Cell metadata that records a run, removed by {@link cleanNotebook}. */
const RUN_METADATA = ["execution", "collapsed", "scrolled"];

const MARKER = /^\/\/ %%(?: \[(markdown|raw|notebook)\])?(?: (\{.*\}))?$/;

/**
 * A cell's source as one string (nbformat allows a list of lines).
 *
 * @param cell A notebook cell.
 * @returns The source text.
 *
 * @example
 * ```ts
 * sourceOf({ cell_type: "code", source: ["a\n", "b"], metadata: {} }); // "a\nb"
 * ```
 */
export function sourceOf(cell: Pick<NotebookCell, "source">): string {
  return Array.isArray(cell.source) ? cell.source.join("") : cell.source;
}

/**
 * Converts a notebook to the text format. Outputs are not kept.
 *
 * @param notebook The notebook.
 * @returns The text, ending in a newline.
 * @throws {Error} When a code cell has a line starting with `// %%`.
 *
 * @example
 * ```ts
 * const text = notebookToText(JSON.parse(await Deno.readTextFile("notebooks/01_x.ipynb")));
 * ```
 */
export function notebookToText(notebook: Notebook): string {
  const blocks: string[] = [];
  const extraMetadata = differingMetadata(notebook.metadata);
  if (extraMetadata) blocks.push(`// %% [notebook] ${JSON.stringify(extraMetadata)}`);
  const ids = defaultIds(notebook.cells);
  notebook.cells.forEach((cell, index) => {
    const source = sourceOf(cell);
    const extra: Record<string, unknown> = {};
    if (cell.id !== undefined && cell.id !== ids[index]) extra.id = cell.id;
    const metadata = withoutRunMetadata(cell.metadata);
    if (Object.keys(metadata).length > 0) extra.metadata = metadata;
    if (cell.attachments) extra.attachments = cell.attachments;
    const kind = cell.cell_type === "code" ? "" : ` [${cell.cell_type}]`;
    const json = Object.keys(extra).length > 0 ? ` ${JSON.stringify(extra)}` : "";
    const lines = source === "" ? [] : source.split("\n");
    const body = cell.cell_type === "markdown"
      ? lines.map((line) => line ? `// ${line}` : "//")
      : lines;
    const clash = body.findIndex((line) => MARKER.test(line));
    if (clash >= 0) {
      throw new Error(
        `Cannot convert cell ${index + 1} to text: its line ${clash + 1} would read as a cell ` +
          `marker ("${lines[clash]}"); change that line`,
      );
    }
    blocks.push([`// %%${kind}${json}`, ...body].join("\n"));
  });
  return blocks.join("\n\n") + "\n";
}

/**
 * Parses the text format into a clean notebook (no outputs, execution
 * counts null, nbformat 4.5 with cell ids, the project kernelspec).
 *
 * @param text The text, as {@link notebookToText} writes it.
 * @param fileName Named in error messages. @default "text"
 * @returns The notebook.
 * @throws {Error} On text before the first marker or an unprefixed markdown line.
 *
 * @example
 * ```ts
 * const notebook = textToNotebook("// %% [markdown]\n// # Title\n\n// %%\n1 + 1\n");
 * ```
 */
export function textToNotebook(text: string, fileName = "text"): Notebook {
  const unix = text.replaceAll("\r\n", "\n");
  const lines = (unix.endsWith("\n") ? unix.slice(0, -1) : unix).split("\n");
  const starts = lines.flatMap((line, index) => MARKER.test(line) ? [index] : []);
  const leading = lines.slice(0, starts[0] ?? lines.length).findIndex((line) => line.trim());
  if (leading >= 0) {
    throw new Error(
      `Cannot read ${fileName}: line ${leading + 1} comes before the first "// %%" marker; ` +
        `start the file with "// %%" or "// %% [markdown]"`,
    );
  }
  let metadata: Record<string, unknown> = { ...NOTEBOOK_METADATA };
  const cells: NotebookCell[] = [];
  const ids: (string | undefined)[] = [];
  starts.forEach((start, n) => {
    const [, kind, json] = MARKER.exec(lines[start])!;
    const extra = json ? parseExtra(json, fileName, start) : {};
    const end = starts[n + 1] ?? lines.length;
    let body = lines.slice(start + 1, end);
    if (n + 1 < starts.length && body.at(-1) === "") body = body.slice(0, -1); // the separator
    if (kind === "notebook") {
      metadata = withoutNulls({ ...metadata, ...extra });
      return;
    }
    if (kind === "markdown") {
      body = body.map((line, i) => markdownLine(line, fileName, start + 2 + i));
    }
    const source = body.join("\n");
    const cellMetadata = (extra.metadata ?? {}) as Record<string, unknown>;
    ids.push(typeof extra.id === "string" ? extra.id : undefined);
    cells.push(
      kind === "markdown" || kind === "raw"
        ? {
          cell_type: kind as "markdown" | "raw",
          metadata: cellMetadata,
          source,
          ...(extra.attachments
            ? { attachments: extra.attachments as Record<string, unknown> }
            : {}),
        }
        : { cell_type: "code", execution_count: null, metadata: cellMetadata, outputs: [], source },
    );
  });
  const defaults = defaultIds(cells);
  cells.forEach((cell, index) => cell.id = ids[index] ?? defaults[index]);
  return { cells: cells.map(orderKeys), metadata, nbformat: 4, nbformat_minor: 5 };
}

/**
 * Strips outputs, execution counts and run metadata (cell timings, the
 * kernel's TypeScript version), and gives every cell an id (nbformat 4.5).
 * Other metadata is kept.
 *
 * @param notebook The notebook; not changed.
 * @returns A clean copy.
 *
 * @example
 * ```ts
 * const clean = cleanNotebook(executed);
 * ```
 */
export function cleanNotebook(notebook: Notebook): Notebook {
  const ids = defaultIds(notebook.cells);
  const cells = notebook.cells.map((cell, index): NotebookCell => {
    const base = {
      ...cell,
      id: cell.id ?? ids[index],
      metadata: withoutRunMetadata(cell.metadata),
    };
    if (cell.cell_type !== "code") return orderKeys(base);
    return orderKeys({ ...base, execution_count: null, outputs: [] });
  });
  const metadata = { ...notebook.metadata };
  const languageInfo = metadata.language_info as Record<string, unknown> | undefined;
  if (languageInfo?.version !== undefined) {
    const { version: _version, ...rest } = languageInfo; // the TypeScript version of the last run
    metadata.language_info = rest;
  }
  return {
    ...notebook,
    cells,
    metadata,
    nbformat: 4,
    nbformat_minor: Math.max(5, notebook.nbformat_minor),
  };
}

/**
 * Serialises a notebook the way Jupyter saves it: keys sorted, one-space
 * indent, sources as lists of lines, a final newline.
 *
 * @param notebook The notebook.
 * @returns The `.ipynb` text.
 *
 * @example
 * ```ts
 * await Deno.writeTextFile("notebooks/01_x.ipynb", formatNotebook(notebook));
 * ```
 */
export function formatNotebook(notebook: Notebook): string {
  const cells = notebook.cells.map((cell) => ({ ...cell, source: splitLines(sourceOf(cell)) }));
  return JSON.stringify(sortKeys({ ...notebook, cells }), null, 1) + "\n";
}

/**
 * Reads an `.ipynb` file.
 *
 * @param path The file.
 * @returns The notebook.
 *
 * @example
 * ```ts
 * const notebook = await readNotebook("notebooks/01_x.ipynb");
 * ```
 */
export async function readNotebook(path: string): Promise<Notebook> {
  const text = await Deno.readTextFile(path);
  try {
    return JSON.parse(text) as Notebook;
  } catch (error) {
    throw new Error(
      `Cannot read notebook ${path}: it is not valid JSON (${(error as Error).message})`,
    );
  }
}

/** Ids for cells without one: a hash of kind and source, made unique by position. */
function defaultIds(cells: Pick<NotebookCell, "cell_type" | "source">[]): string[] {
  const seen = new Set<string>();
  return cells.map((cell) => {
    const base = fnv1a(`${cell.cell_type}\n${sourceOf(cell)}`);
    let id = base;
    for (let n = 2; seen.has(id); n++) id = `${base}-${n}`;
    seen.add(id);
    return id;
  });
}

function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, "0");
}

function differingMetadata(metadata: Record<string, unknown>): Record<string, unknown> | undefined {
  const extra: Record<string, unknown> = {};
  for (const key of new Set([...Object.keys(metadata), ...Object.keys(NOTEBOOK_METADATA)])) {
    if (
      JSON.stringify(sortKeys(metadata[key])) !== JSON.stringify(sortKeys(NOTEBOOK_METADATA[key]))
    ) {
      extra[key] = metadata[key] ?? null;
    }
  }
  return Object.keys(extra).length > 0 ? extra : undefined;
}

function withoutNulls(metadata: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(metadata).filter(([, value]) => value !== null));
}

function withoutRunMetadata(metadata: Record<string, unknown> = {}): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(metadata).filter(([key]) => !RUN_METADATA.includes(key)),
  );
}

function parseExtra(json: string, fileName: string, index: number): Record<string, unknown> {
  try {
    return JSON.parse(json);
  } catch (error) {
    throw new Error(
      `Cannot read ${fileName}: line ${index + 1} has invalid JSON after the marker ` +
        `(${(error as Error).message}); fix or remove it`,
    );
  }
}

function markdownLine(line: string, fileName: string, lineNumber: number): string {
  if (line === "//" || line === "") return "";
  if (line.startsWith("// ")) return line.slice(3);
  throw new Error(
    `Cannot read ${fileName}: line ${lineNumber} is in a markdown cell but does not start ` +
      `with "// "; prefix it or start a code cell with "// %%"`,
  );
}

function splitLines(text: string): string[] {
  return text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.keys(value).sort().map((
      key,
    ) => [key, sortKeys((value as Record<string, unknown>)[key])]),
  );
}

function orderKeys<T extends NotebookCell>(cell: T): T {
  return sortKeys(cell) as T;
}

const USAGE = `Usage:
  deno task nb to-text NOTEBOOK.ipynb...    writes NOTEBOOK.ts.txt next to each
  deno task nb to-ipynb NOTEBOOK.ts.txt...  writes NOTEBOOK.ipynb next to each (clean)
  deno task nb clean NOTEBOOK.ipynb...      strips outputs in place`;

async function main(args: string[]): Promise<number> {
  const [command, ...paths] = args;
  if (!command || paths.length === 0 || !["to-text", "to-ipynb", "clean"].includes(command)) {
    console.error(USAGE);
    return 2;
  }
  for (const path of paths) {
    if (command === "to-text") {
      const target = path.replace(/\.ipynb$/, "") + ".ts.txt";
      await Deno.writeTextFile(target, notebookToText(await readNotebook(path)));
      console.log(`${path} -> ${target}`);
    } else if (command === "to-ipynb") {
      const target = path.replace(/\.ts\.txt$|\.txt$/, "") + ".ipynb";
      await Deno.writeTextFile(
        target,
        formatNotebook(textToNotebook(await Deno.readTextFile(path), path)),
      );
      console.log(`${path} -> ${target}`);
    } else {
      await Deno.writeTextFile(path, formatNotebook(cleanNotebook(await readNotebook(path))));
      console.log(`cleaned ${path}`);
    }
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error((error as Error).message);
    Deno.exit(1);
  }
}
