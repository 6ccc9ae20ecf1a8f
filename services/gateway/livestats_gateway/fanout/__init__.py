"""The fan-out core: one shared stream reader per process (hub), the join handshake, each
client's bounded queue (subscriber), the wire format, the live run index and the counters
they keep (stats). Nothing here imports a route or the app state."""
