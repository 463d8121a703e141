/** Where this server keeps its state (cached store configs, remote stores' indexes): BAKKER_STATE_DIR or /var/lib/bakker. */
export function stateDir(): string {
  return process.env.BAKKER_STATE_DIR ?? '/var/lib/bakker';
}
