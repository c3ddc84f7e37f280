"""loadtests: a load generator for KServe v2 gRPC servers that judges a rollout, not just measures it.

It speaks only the wire contract (``serving.proto`` stubs), so it drives this project's server, Triton,
or any other KServe v2 gRPC server. See docs/loadtests.md.

    cli, commands     argparse front end and what each command does (run, sweep, scenario, compare, …)
    plan              what to run: targets (model, version, load shape, inputs, keys) and timing
    inputs, keys      pre-serialised request bodies; routing-key distributions
    wire              the protobuf contract: request bytes, the served version from reply bytes, RPCs
    engine            one worker's asyncio hot path (closed and open loop, intended send times)
    recorder          what a worker records and the messages it sends to the parent
    workers, runner   worker processes with a common start; one run end to end, with actions
    histogram         HDR-style log-linear histogram
    timeline, results merged per-target view → summaries, verdict, JSON
    slo, stats        SLO gates; Wilson interval, Mann-Whitney U, bootstrap
    sweep, compare    capacity at SLO; candidate vs baseline
    scenario, actions multi-model scenario files with operator actions on the timeline
    progress          live terminal progress (rich) or log lines
    report, svg       the self-contained HTML report with inline SVG charts
    noop_server, selfcost   a do-nothing KServe server, and the generator's own ceiling against it
    served_vs_raw     a separate bench: the server's cost over calling the model file directly
"""
