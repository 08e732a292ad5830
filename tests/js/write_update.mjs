// Write to a crdtsync vault's Doc from JavaScript Yjs, following the v1 document layout (README.md "Document
// schema"), and emit the resulting Yjs v1 update for the vault to apply.
//
// Usage: node write_update.mjs UPDATE_FILE STATE_VECTOR_FILE SPEC_JSON OUT_FILE
//   UPDATE_FILE        the vault's full update (Vault.encode_update())
//   STATE_VECTOR_FILE  the vault's encoded state vector (Vault.state_vector())
//   SPEC_JSON          {"device", "at", "add": {"id", "content", "category", "tags", "metadata"},
//                       "edit": {"id", "content"}}; metadata is written as compact JSON text, like the vault
//   OUT_FILE           receives Y.encodeStateAsUpdate(doc, stateVector): what the vault lacks
// Prints {"client_id": <the JS Doc's client id>} on stdout.
import { readFileSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import * as Y from 'yjs'

const [updateFile, stateVectorFile, specJson, outFile] = process.argv.slice(2)
if (!outFile) {
  console.error('usage: node write_update.mjs UPDATE_FILE STATE_VECTOR_FILE SPEC_JSON OUT_FILE')
  process.exit(2)
}
const spec = JSON.parse(specJson)
const newOpId = () => randomBytes(6).toString('base64url')

const doc = new Y.Doc()
Y.applyUpdate(doc, new Uint8Array(readFileSync(updateFile)))
const memories = doc.getMap('memories')

// One register write: delete every entry of the register this replica sees, insert one new entry.
const writeRegister = (record, field, entry) => {
  for (const key of Array.from(record.keys())) {
    if (key.startsWith(field + '@')) record.delete(key)
  }
  record.set(`${field}@${newOpId()}`, entry)
}

doc.transact(() => {
  const add = spec.add
  const record = new Y.Map()
  memories.set(add.id, record)
  record.set('created', [spec.at, spec.device])
  // Entries of an add carry no by/at: they default to the record's creating device and time.
  record.set(`content@${newOpId()}`, [add.content])
  record.set(`category@${newOpId()}`, [add.category])
  record.set(`metadata@${newOpId()}`, [JSON.stringify(add.metadata)])
  for (const tag of add.tags) record.set(`t:${tag}@js-${tag}`, true)

  const target = memories.get(spec.edit.id)
  if (!(target instanceof Y.Map)) throw new Error(`no memory ${spec.edit.id} in the Doc`)
  writeRegister(target, 'content', [spec.edit.content, spec.device, spec.at])
  // Every edit also rewrites `deleted` to false (so a concurrent delete surfaces as a conflict).
  writeRegister(target, 'deleted', [false, spec.device, spec.at])
})

const stateVector = new Uint8Array(readFileSync(stateVectorFile))
writeFileSync(outFile, Y.encodeStateAsUpdate(doc, stateVector))
process.stdout.write(JSON.stringify({ client_id: doc.clientID }) + '\n')
