import { defineCommand } from "citty";
export default defineCommand({ meta: { name: "fire", description: "not built yet" }, run: () => { throw new Error("fire is not built yet"); } });
