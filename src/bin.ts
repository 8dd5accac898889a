#!/usr/bin/env node
/**
 * The `effect-checkpoint` command: `npx effect-checkpoint --help`.
 *
 * @since 0.2.0
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect, Exit, Layer } from "effect"
import * as Io from "./cli/Io.js"
import { main } from "./cli/Main.js"

NodeRuntime.runMain(
  main(process.argv).pipe(Effect.provide(Layer.merge(NodeContext.layer, Io.layerNode))),
  {
    disableErrorReporting: true,
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : 1)
  }
)
