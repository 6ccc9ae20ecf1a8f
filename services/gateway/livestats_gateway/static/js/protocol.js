// @ts-check
// The gateway's WebSocket close codes, named once for the page. They are the gateway's
// `CloseCode` (livestats_gateway/wire.py); tests/gateway/test_js_protocol.py checks both agree.

/** Close codes the gateway sends (docs/api.md, "WebSocket protocol"). */
export const CloseCode = Object.freeze({
  GOING_AWAY: 1001, // gateway shutting down: reconnect and resume
  UNSUPPORTED_DATA: 1003, // the page sent a binary message
  MESSAGE_TOO_BIG: 1009, // the page sent an oversized message
  INTERNAL_ERROR: 1011, // a bug, in the gateway's log
  TRY_AGAIN_LATER: 1013, // Redis is unavailable: reconnect with backoff and resume
  SLOW_CLIENT: 4008, // the page fell behind its send queue: reconnect with `since`
  BAD_REQUEST: 4400, // invalid `since`
  UNAUTHORIZED: 4401, // not logged in, or the token was revoked
  FORBIDDEN: 4403, // the token lacks a scope, or the origin is not allowed
  NOT_FOUND: 4404, // no such run (or not one this principal may see)
  INVALID_RUN_ID: 4422, // the run id does not match the id pattern
  TOO_MANY_STREAMS: 4429, // the principal holds as many streams as it may on this gateway
});

/** Close codes the page itself uses when it closes a socket (the gateway never sends them). */
export const PageCloseCode = Object.freeze({
  NORMAL: 1000, // the page is done with the socket
  SILENT: 4000, // the page's watchdog heard no frame for too long
});
