import { defineCommand } from "citty";
export default defineCommand({ meta: { name: "publish", description: "not built yet" }, run: () => { throw new Error("publish is not built yet"); } });
