/**
 * Splitting SQL text into statements, the way psql does before sending
 * them: at semicolons outside quotes, dollar quotes and comments.
 *
 * @module
 */

/**
 * Splits SQL text into statements (without the trailing semicolons, blank
 * ones dropped). Understands '…' and E'…' strings, "…" identifiers,
 * $tag$…$tag$ bodies, -- and (nested) /* … *\/ comments.
 *
 * @example
 * ```ts
 * splitStatements("BEGIN; DO $$ BEGIN PERFORM 1; END $$; COMMIT;");
 * // ["BEGIN", "DO $$ BEGIN PERFORM 1; END $$", "COMMIT"]
 * ```
 */
export function splitStatements(text: string): string[] {
  const statements: string[] = [];
  let start = 0;
  let i = 0;
  const n = text.length;
  const push = (end: number) => {
    const statement = text.slice(start, end).trim();
    if (statement && !isOnlyComments(statement)) statements.push(statement);
  };
  while (i < n) {
    const c = text[i];
    const next = text[i + 1];
    if (c === "-" && next === "-") {
      i = lineEnd(text, i);
    } else if (c === "/" && next === "*") {
      i = blockCommentEnd(text, i);
    } else if (c === "'") {
      const escapes = /[eE]/.test(text[i - 1] ?? "") && !/[\w$]/.test(text[i - 2] ?? "");
      i = quoteEnd(text, i, "'", escapes);
    } else if (c === '"') {
      i = quoteEnd(text, i, '"', false);
    } else if (c === "$") {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i));
      if (tag && !/[\w$]/.test(text[i - 1] ?? "")) {
        const close = text.indexOf(tag[0], i + tag[0].length);
        i = close < 0 ? n : close + tag[0].length;
      } else {
        i++;
      }
    } else if (c === ";") {
      push(i);
      start = ++i;
    } else {
      i++;
    }
  }
  push(n);
  return statements;
}

function lineEnd(text: string, i: number): number {
  const end = text.indexOf("\n", i);
  return end < 0 ? text.length : end + 1;
}

function blockCommentEnd(text: string, i: number): number {
  let depth = 0;
  while (i < text.length) {
    if (text.startsWith("/*", i)) {
      depth++;
      i += 2;
    } else if (text.startsWith("*/", i)) {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else {
      i++;
    }
  }
  return i;
}

function quoteEnd(text: string, i: number, quote: string, backslashEscapes: boolean): number {
  i++;
  while (i < text.length) {
    const c = text[i];
    if (backslashEscapes && c === "\\") {
      i += 2;
    } else if (c === quote) {
      if (text[i + 1] === quote) i += 2;
      else return i + 1;
    } else {
      i++;
    }
  }
  return i;
}

function isOnlyComments(statement: string): boolean {
  return stripComments(statement).trim() === "";
}

function stripComments(text: string): string {
  let out = "";
  let i = 0;
  while (i < text.length) {
    if (text.startsWith("--", i)) i = lineEnd(text, i);
    else if (text.startsWith("/*", i)) i = blockCommentEnd(text, i);
    else out += text[i++];
  }
  return out;
}
