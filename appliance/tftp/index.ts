/** Read-only TFTP for the first-stage bootstrap: the codec, negotiation, path checks, the server and a small client (see README.md). */
export {
  BLKSIZE_DEFAULT,
  BLKSIZE_MAX,
  BLKSIZE_MIN,
  TFTP_ERROR_CODES,
  TFTP_OPCODES,
  TftpDecodeError,
  ackBlock,
  decodeTftp,
  describeTftp,
  encodeTftp,
  parseOptions,
  type TftpAck,
  type TftpData,
  type TftpError,
  type TftpErrorCode,
  type TftpOack,
  type TftpOp,
  type TftpOption,
  type TftpPacket,
  type TftpRequest,
  type TftpRequestOptions,
} from './codec.js';
export { negotiate, type Negotiated, type NegotiationLimits } from './negotiate.js';
export { checkTftpName, resolveTftpPath, type ResolvedPath } from './paths.js';
export { FileCache, FileChangedError, NotRegularFileError, type BlockSource, type FileCacheOptions, type FileCacheStats } from './source.js';
export { startTftpServer, type TftpServer, type TftpServerOptions, type TftpServerStats } from './server.js';
export { TftpRemoteError, tftpGet, type TftpGetOptions, type TftpGetResult } from './client.js';
