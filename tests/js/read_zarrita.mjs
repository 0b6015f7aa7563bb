import * as zarr from "zarrita";
import { FileSystemStore } from "@zarrita/storage";
const [root, ...names] = process.argv.slice(2);
const store = new FileSystemStore(root);
const out = {};
for (const name of names) {
  try {
    const arr = await zarr.open(zarr.root(store).resolve(name), { kind: "array" });
    const chunk = await zarr.get(arr);
    out[name] = { shape: chunk.shape, data: Array.from(chunk.data, (v) => (typeof v === "bigint" ? Number(v) : v)) };
  } catch (e) {
    out[name] = { error: String(e) };
  }
}
console.log(JSON.stringify(out));
