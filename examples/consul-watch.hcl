# A watch in the Consul agent's own configuration (stretcher's classic setup): every `deploy` event
# runs the agent. Under consul watch the agent always exits 0, so a failed deploy never stops the watch.
watches = [
  {
    type    = "event"
    name    = "deploy"
    handler_type = "script"
    args    = ["/usr/local/bin/pulldeploy", "agent", "--role", "web", "--retry", "3"]
  }
]
