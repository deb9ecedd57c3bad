// Preloaded into NNI's manager (Node.js) by nni-shiftadd through NODE_OPTIONS=--require: a server that is told to
// listen on a port and no host (NNI's REST API and web UI call app.listen(port)) listens on NNI_SHIFTADD_HOST,
// 127.0.0.1 unless the user asks for another address, instead of on every interface.
'use strict';
const net = require('net');

const host = process.env.NNI_SHIFTADD_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;

function isPort(value) {
  return typeof value === 'number' || (typeof value === 'string' && /^\d+$/.test(value));
}

net.Server.prototype.listen = function (...args) {
  if (isPort(args[0]) && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, host);
  } else if (args[0] !== null && typeof args[0] === 'object' && !('path' in args[0]) && !('fd' in args[0])
             && !('handle' in args[0]) && args[0].host === undefined && !('_handle' in args[0])) {
    args[0] = Object.assign({}, args[0], { host });
  }
  return listen.apply(this, args);
};
