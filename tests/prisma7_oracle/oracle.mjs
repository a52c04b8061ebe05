// Prisma 7's schema engine (the WebAssembly build Prisma publishes on npm, the one its release pins) driven
// through the pg driver adapter. Prisma 7's CLI runs migrate only through a native schema-engine binary that
// it downloads from binaries.prisma.sh (not the npm registry), so it cannot run here; this runs the same
// engine commands the CLI sends (diagnoseMigrationHistory for `migrate status`, applyMigrations for
// `migrate deploy`, markMigrationApplied / markMigrationRolledBack for `migrate resolve`).
//
// Faithful to the native engine where it matters: one connection (pool of 1, so the advisory lock, the
// history rows and the scripts share a session), search_path set to ?schema= at connect as quaint does,
// and the adapter's executeScript replaced by ONE simple-query round trip per call, as the native engine's
// simple_query (the stock adapter splits on every ";" instead). Every piece the engine sends is printed.
//
// Usage: DATABASE_URL=... node oracle.mjs status|deploy|resolve-applied NAME|resolve-rolled-back NAME DIR
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import * as bg from "@prisma/schema-engine-wasm/schema_engine_bg";
import { PrismaPg } from "@prisma/adapter-pg";
import { bindMigrationAwareSqlAdapterFactory } from "@prisma/driver-adapter-utils";

const wasmPath = path.join(path.dirname(createRequire(import.meta.url).resolve("@prisma/schema-engine-wasm")), "schema_engine_bg.wasm");
const { instance } = await WebAssembly.instantiate(fs.readFileSync(wasmPath), { "./schema_engine_bg.js": bg });
bg.__wbg_set_wasm(instance.exports);
instance.exports.__wbindgen_start?.();
const { SchemaEngine } = bg;

const [command, ...rest] = process.argv.slice(2);
const migrationsDir = rest.pop();
const url = new URL(process.env.DATABASE_URL);
const schema = url.searchParams.get("schema") ?? undefined;
url.searchParams.delete("schema");
const pieces = [];
const quoted = schema ? `"${schema.replaceAll('"', '""')}"` : null;
const options = quoted ? `-c search_path=${quoted.replaceAll("\\", "\\\\").replaceAll(" ", "\\ ")}` : undefined;
const factory = new PrismaPg({ connectionString: url.toString(), max: 1, options }, schema ? { schema } : undefined);
const connect = factory.connect.bind(factory);
factory.connect = async () => {
  const adapter = await connect();
  const pool = adapter.underlyingDriver();
  adapter.executeScript = async (script) => {
    pieces.push(script);
    try {
      await pool.query(script);
    } catch (error) {
      adapter.onError(error);
    }
  };
  return adapter;
};

function migrationsList() {
  const dirs = fs.readdirSync(migrationsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  const lock = path.join(migrationsDir, "migration_lock.toml");
  return {
    baseDir: migrationsDir,
    lockfile: { path: "migration_lock.toml", content: fs.existsSync(lock) ? fs.readFileSync(lock, "utf8") : null },
    shadowDbInitScript: "",
    migrationDirectories: dirs.map((d) => {
      const file = path.join(migrationsDir, d, "migration.sql");
      return {
        path: d,
        migrationFile: {
          path: "migration.sql",
          content: fs.existsSync(file) ? { tag: "ok", value: fs.readFileSync(file, "utf8") } : { tag: "error", value: "missing" },
        },
      };
    }),
  };
}

const datamodel = `datasource db {\n  provider = "postgresql"\n}\n`;
const logs = [];
const engine = await SchemaEngine.new({ datamodels: [["schema.prisma", datamodel]] }, (l) => logs.push(l), bindMigrationAwareSqlAdapterFactory(factory));
const filters = { externalTables: [], externalEnums: [] };
let result;
try {
  if (command === "status") {
    result = await engine.diagnoseMigrationHistory({ migrationsList: migrationsList(), optInToShadowDatabase: false, filters });
  } else if (command === "deploy") {
    result = await engine.applyMigrations({ migrationsList: migrationsList(), filters });
  } else if (command === "resolve-applied") {
    result = await engine.markMigrationApplied({ migrationName: rest[0], migrationsList: migrationsList() });
  } else if (command === "resolve-rolled-back") {
    result = await engine.markMigrationRolledBack({ migrationName: rest[0] });
  } else {
    throw new Error(`unknown command ${command}`);
  }
  console.log(JSON.stringify({ ok: true, result, pieces }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.message ?? error), code: error?.code ?? null, meta: error?.meta ?? null, pieces }));
} finally {
  process.exit(0);
}
