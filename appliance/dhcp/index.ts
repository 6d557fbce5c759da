/** ProxyDHCP for PXE targets: the codec, the pure decision and the UDP server (see README.md). */
export {
  BOOTREPLY,
  BOOTREQUEST,
  BROADCAST_FLAG,
  DhcpDecodeError,
  decodeDhcp,
  describeDhcp,
  encodeDhcp,
  hardwareAddress,
  messageTypeName,
  type DhcpDecodeErrorCode,
  type DhcpOption,
  type DhcpPacket,
} from './codec.js';
export {
  ARCH,
  MSG,
  OPT,
  PXE_SUBOPT,
  archName,
  clientArchs,
  clientMachineId,
  clientNdi,
  decodePxeVendorOptions,
  encodePxeVendorOptions,
  getOption,
  messageType,
  parameterRequestList,
  serverId,
  userClasses,
  vendorClass,
} from './options.js';
export { DEFAULT_BOOT_FILES, proxyReply, type Firmware, type ProxyConfig, type ProxyDecision, type PxeClient } from './proxy.js';
export { replyDestination, startProxyDhcp, type ProxyDhcpOptions, type ProxyDhcpServer, type ProxyDhcpStats, type ReplyDestination } from './server.js';
