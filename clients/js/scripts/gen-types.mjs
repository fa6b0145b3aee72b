#!/usr/bin/env node
// Generates src/gen/wac.ts from the descriptor set that tools/gen_proto.py
// builds (build/wac.pb): one TypeScript type per wac.v1 message and enum, in
// the proto3 JSON shape the WAPI speaks, and a Methods map from
// "Service.Method" to [request, response].
//
//   node scripts/gen-types.mjs           write src/gen/wac.ts
//   node scripts/gen-types.mjs --check   exit 1 if src/gen/wac.ts is stale
//
// Only the wac.v1 package is emitted; the well-known types it uses are mapped
// to their JSON forms (Timestamp, Duration and FieldMask are strings), and a
// reference to any other foreign type is an error, so that a new import in the
// contract is mapped here on purpose rather than by accident.

import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import descriptor from "protobufjs/ext/descriptor.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const JS_ROOT = resolve(HERE, "..");
const DESCRIPTOR_SET = resolve(JS_ROOT, "../../build/wac.pb");
const OUTPUT = resolve(JS_ROOT, "src/gen/wac.ts");
const PACKAGE = "wac.v1";

// Field numbers inside descriptor.proto, used to address SourceCodeInfo paths.
const FILE_MESSAGE_TYPE = 4;
const FILE_ENUM_TYPE = 5;
const FILE_SERVICE = 6;
const MESSAGE_FIELD = 2;
const MESSAGE_NESTED_TYPE = 3;
const MESSAGE_ENUM_TYPE = 4;
const ENUM_VALUE = 2;
const SERVICE_METHOD = 2;

// The proto3 JSON form of the well-known types (protobuf's JSON mapping).
const WELL_KNOWN = {
  ".google.protobuf.Timestamp": "string",
  ".google.protobuf.Duration": "string",
  ".google.protobuf.FieldMask": "string",
  ".google.protobuf.Empty": "Empty",
  ".google.protobuf.Struct": "{ [key: string]: unknown }",
  ".google.protobuf.Value": "unknown",
  ".google.protobuf.ListValue": "unknown[]",
  ".google.protobuf.Any": '{ "@type": string; [key: string]: unknown }',
  ".google.protobuf.StringValue": "string | null",
  ".google.protobuf.BytesValue": "string | null",
  ".google.protobuf.BoolValue": "boolean | null",
  ".google.protobuf.Int32Value": "number | null",
  ".google.protobuf.UInt32Value": "number | null",
  ".google.protobuf.FloatValue": "number | null",
  ".google.protobuf.DoubleValue": "number | null",
  ".google.protobuf.Int64Value": "string | null",
  ".google.protobuf.UInt64Value": "string | null",
  // google.rpc.Status in proto3 JSON (details are Any).
  ".google.rpc.Status": '{ code?: number; message?: string; details?: { "@type": string; [key: string]: unknown }[] }',
};

const SCALARS = {
  TYPE_DOUBLE: "number",
  TYPE_FLOAT: "number",
  TYPE_INT32: "number",
  TYPE_UINT32: "number",
  TYPE_SINT32: "number",
  TYPE_FIXED32: "number",
  TYPE_SFIXED32: "number",
  // 64-bit integers are strings in proto3 JSON: a double cannot hold them.
  TYPE_INT64: "string",
  TYPE_UINT64: "string",
  TYPE_SINT64: "string",
  TYPE_FIXED64: "string",
  TYPE_SFIXED64: "string",
  TYPE_BOOL: "boolean",
  TYPE_STRING: "string",
  TYPE_BYTES: "string", // base64
};

function loadFiles() {
  if (!existsSync(DESCRIPTOR_SET)) {
    throw new Error(
      `${DESCRIPTOR_SET} is missing: build it first with \`.venv/bin/python tools/gen_proto.py\` at the repository root`,
    );
  }
  const set = descriptor.FileDescriptorSet.decode(readFileSync(DESCRIPTOR_SET));
  const object = descriptor.FileDescriptorSet.toObject(set, {
    enums: String,
    longs: String,
    arrays: true,
    defaults: false,
  });
  return object.file;
}

/** Maps "path,joined,by,commas" to the element's leading comment. */
function commentIndex(file) {
  const comments = new Map();
  for (const location of file.sourceCodeInfo?.location ?? []) {
    if (location.leadingComments) comments.set(location.path.join(","), location.leadingComments);
  }
  return comments;
}

function docComment(text, indent) {
  if (!text) return "";
  const lines = text.replace(/\s+$/, "").split("\n").map((line) => line.replace(/^ /, "").replace(/\*\//g, "*\\/"));
  if (lines.length === 1) return `${indent}/** ${lines[0]} */\n`;
  return `${indent}/**\n${lines.map((line) => `${indent} *${line ? ` ${line}` : ""}`).join("\n")}\n${indent} */\n`;
}

/**
 * Collects every message and enum of the package with its TypeScript name
 * (nested types joined by "_", as in Presence_Status) and its comment.
 */
function collectTypes(files) {
  const messages = [];
  const enums = [];
  const names = new Map(); // fully qualified proto name -> TypeScript name
  for (const file of files.filter((f) => f.package === PACKAGE)) {
    const comments = commentIndex(file);
    const visitEnum = (type, scope, path) => {
      const fullName = `${scope}.${type.name}`;
      const tsName = fullName.slice(PACKAGE.length + 2).replaceAll(".", "_");
      names.set(fullName, tsName);
      enums.push({ type, tsName, path, comments, file: file.name });
    };
    const visitMessage = (type, scope, path) => {
      const fullName = `${scope}.${type.name}`;
      const tsName = fullName.slice(PACKAGE.length + 2).replaceAll(".", "_");
      names.set(fullName, tsName);
      const isMapEntry = Boolean(type.options?.mapEntry);
      messages.push({ type, tsName, fullName, path, comments, file: file.name, isMapEntry });
      (type.nestedType ?? []).forEach((nested, i) =>
        visitMessage(nested, fullName, [...path, MESSAGE_NESTED_TYPE, i]),
      );
      (type.enumType ?? []).forEach((nested, i) => visitEnum(nested, fullName, [...path, MESSAGE_ENUM_TYPE, i]));
    };
    const scope = `.${PACKAGE}`;
    (file.messageType ?? []).forEach((type, i) => visitMessage(type, scope, [FILE_MESSAGE_TYPE, i]));
    (file.enumType ?? []).forEach((type, i) => visitEnum(type, scope, [FILE_ENUM_TYPE, i]));
  }
  return { messages, enums, names };
}

function typeReference(typeName, names, usedWellKnown) {
  if (names.has(typeName)) return names.get(typeName);
  if (typeName in WELL_KNOWN) {
    usedWellKnown.add(typeName);
    return WELL_KNOWN[typeName];
  }
  throw new Error(`no JSON mapping for ${typeName}: add it to WELL_KNOWN in scripts/gen-types.mjs`);
}

function fieldType(field, context) {
  const { names, mapEntries, usedWellKnown } = context;
  if (field.type === "TYPE_MESSAGE" || field.type === "TYPE_ENUM" || field.type === "TYPE_GROUP") {
    const entry = mapEntries.get(field.typeName);
    if (entry) {
      const value = entry.type.field[1]; // JSON object keys are strings whatever the key type
      return `{ [key: string]: ${fieldType(value, context)} }`;
    }
    const reference = typeReference(field.typeName, names, usedWellKnown);
    return field.label === "LABEL_REPEATED" ? `${parenthesise(reference)}[]` : reference;
  }
  const scalar = SCALARS[field.type];
  if (!scalar) throw new Error(`unknown field type ${field.type} of ${field.name}`);
  return field.label === "LABEL_REPEATED" ? `${scalar}[]` : scalar;
}

function parenthesise(type) {
  return /[ |{]/.test(type) ? `(${type})` : type;
}

function renderEnum({ type, tsName, path, comments }) {
  const doc = docComment(comments.get(path.join(",")), "");
  const values = type.value.map((value, i) => {
    const valueDoc = docComment(comments.get([...path, ENUM_VALUE, i].join(",")), "  ");
    return `${valueDoc}  | "${value.name}"`;
  });
  return `${doc}export type ${tsName} =\n${values.join("\n")};\n`;
}

function renderMessage(message, context) {
  const { type, tsName, path, comments } = message;
  const doc = docComment(comments.get(path.join(",")), "");
  const fields = type.field ?? [];
  if (fields.length === 0) return `${doc}export type ${tsName} = Record<string, never>;\n`;
  const oneofs = (type.oneofDecl ?? []).map((oneof) => oneof.name);
  const members = fields.map((field, i) => {
    let fieldDoc = comments.get([...path, MESSAGE_FIELD, i].join(",")) ?? "";
    const isRealOneof = field.oneofIndex !== undefined && field.oneofIndex !== null && !field.proto3Optional;
    if (isRealOneof) fieldDoc += `${fieldDoc ? "\n" : ""} (oneof ${oneofs[field.oneofIndex]}: at most one member is set)`;
    return `${docComment(fieldDoc, "  ")}  ${field.jsonName}?: ${fieldType(field, context)};`;
  });
  return `${doc}export interface ${tsName} {\n${members.join("\n")}\n}\n`;
}

function renderMethods(files, names, usedWellKnown) {
  const rows = [];
  const streaming = [];
  for (const file of files.filter((f) => f.package === PACKAGE)) {
    const comments = commentIndex(file);
    (file.service ?? []).forEach((service, s) => {
      (service.method ?? []).forEach((method, m) => {
        const key = `${service.name}.${method.name}`;
        const request = typeReference(method.inputType, names, usedWellKnown);
        const response = typeReference(method.outputType, names, usedWellKnown);
        const doc = docComment(comments.get([FILE_SERVICE, s, SERVICE_METHOD, m].join(",")), "  ");
        rows.push(`${doc}  "${key}": [${request}, ${response}];`);
        if (method.serverStreaming) streaming.push(key);
      });
    });
  }
  rows.sort((a, b) => compare(methodKey(a), methodKey(b)));
  return (
    "/**\n * Every RPC of the contract by its JSON-RPC method name, as [request, response].\n" +
    " * For a server-streaming method the response is the type of each streamed item.\n */\n" +
    `export interface Methods {\n${rows.join("\n")}\n}\n\n` +
    "/** A JSON-RPC method name of the WAPI. */\nexport type MethodName = keyof Methods;\n\n" +
    "/** The server-streaming methods; over the WAPI their items arrive as notifications. */\n" +
    `export type StreamingMethodName =${streaming.length ? streaming.map((k) => `\n  | "${k}"`).join("") : " never"};\n`
  );
}

// Code-unit order, so that the output does not depend on the machine's locale.
function compare(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function methodKey(row) {
  return row.slice(row.indexOf('"'));
}

export function generate() {
  const files = loadFiles();
  const { messages, enums, names } = collectTypes(files);
  const mapEntries = new Map(messages.filter((m) => m.isMapEntry).map((m) => [m.fullName, m]));
  const usedWellKnown = new Set();
  const context = { names, mapEntries, usedWellKnown };
  const body = [];
  const byFile = new Map();
  for (const item of [...enums.map((e) => ({ ...e, kind: "enum" })), ...messages.filter((m) => !m.isMapEntry)]) {
    if (!byFile.has(item.file)) byFile.set(item.file, []);
    byFile.get(item.file).push(item);
  }
  for (const file of [...byFile.keys()].sort()) {
    body.push(`// ---- ${file} ----\n`);
    const items = byFile.get(file).sort((a, b) => compare(a.tsName, b.tsName));
    for (const item of items) body.push(item.kind === "enum" ? renderEnum(item) : renderMessage(item, context));
  }
  const methods = renderMethods(files, names, usedWellKnown);
  const header =
    "// Code generated by scripts/gen-types.mjs from build/wac.pb (proto/wac/v1). DO NOT EDIT.\n" +
    "// Regenerate with `npm run gen`; `npm run gen:check` fails while this file is stale.\n" +
    "//\n" +
    "// The types are the proto3 JSON shapes the WAPI sends and accepts: lowerCamelCase\n" +
    "// names, every field optional (defaults are omitted on the wire), enums as their\n" +
    "// value names, 64-bit integers, Timestamps, Durations and FieldMasks as strings.\n\n";
  const empty = usedWellKnown.has(".google.protobuf.Empty")
    ? "/** google.protobuf.Empty: an empty JSON object. */\nexport type Empty = Record<string, never>;\n\n"
    : "";
  return `${header}${empty}${body.join("\n")}\n${methods}`;
}

function main() {
  const check = process.argv.includes("--check");
  const text = generate();
  if (check) {
    const current = existsSync(OUTPUT) ? readFileSync(OUTPUT, "utf8") : "";
    if (current !== text) {
      console.error(`${OUTPUT} is stale: run \`npm run gen\` in clients/js and commit the result`);
      process.exit(1);
    }
    console.log("src/gen/wac.ts is up to date");
    return;
  }
  mkdirSync(dirname(OUTPUT), { recursive: true });
  writeFileSync(OUTPUT, text);
  console.log(`wrote ${OUTPUT}`);
}

main();
