// Apply a crdtsync vault's decrypted Yjs update (a file of Yjs v1 update bytes) to a fresh JavaScript Y.Doc and
// print the three v1 roots as JSON on stdout: {"memories": ..., "devices": ..., "vault": ...}.
//
// Usage: node read_vault.mjs UPDATE_FILE
import { readFileSync } from 'node:fs'
import * as Y from 'yjs'

const [updateFile] = process.argv.slice(2)
if (!updateFile) {
  console.error('usage: node read_vault.mjs UPDATE_FILE')
  process.exit(2)
}
const doc = new Y.Doc()
Y.applyUpdate(doc, new Uint8Array(readFileSync(updateFile)))
// Anything Y.applyUpdate could not integrate stays pending: report it rather than printing a partial Doc.
if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) {
  console.error('the update left pending structs or deletions: it is not a complete Yjs update')
  process.exit(1)
}
process.stdout.write(JSON.stringify({
  memories: doc.getMap('memories').toJSON(),
  devices: doc.getMap('devices').toJSON(),
  vault: doc.getMap('vault').toJSON(),
}) + '\n')
