import { PulldeployError } from "../errors.ts";

/** A tree that cannot be packed; `problems` lists every bad entry. */
export class PackError extends PulldeployError {
  override name = "PackError";
  constructor(
    message: string,
    readonly problems: string[] = [],
  ) {
    super(message, "publish");
  }
}
