"""An outside plugin for nsnet-bench: one detector, registered through `bench.plugins`."""
