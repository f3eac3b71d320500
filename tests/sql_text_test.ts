import assert from "node:assert/strict";
import { splitStatements } from "../lib/sql_text.ts";

Deno.test("splitStatements() splits at semicolons outside quotes, dollar quotes and comments", () => {
  const text = `
    -- a comment; with a semicolon
    BEGIN;
    INSERT INTO t VALUES ('a;b', 'it''s', E'x\\';y', "we;ird");
    DO $$ BEGIN PERFORM 1; END $$;
    CREATE FUNCTION f() RETURNS int AS $fn$ SELECT 1; $fn$ LANGUAGE sql;
    /* block /* nested; */ still comment; */ SELECT $1::int;
    COMMIT`;
  assert.deepEqual(splitStatements(text), [
    "-- a comment; with a semicolon\n    BEGIN",
    `INSERT INTO t VALUES ('a;b', 'it''s', E'x\\';y', "we;ird")`,
    "DO $$ BEGIN PERFORM 1; END $$",
    "CREATE FUNCTION f() RETURNS int AS $fn$ SELECT 1; $fn$ LANGUAGE sql",
    "/* block /* nested; */ still comment; */ SELECT $1::int",
    "COMMIT",
  ]);
});

Deno.test("splitStatements() drops empty and comment-only statements", () => {
  assert.deepEqual(splitStatements(";;  -- nothing\n ; SELECT 1;\n-- trailing comment"), [
    "SELECT 1",
  ]);
});
