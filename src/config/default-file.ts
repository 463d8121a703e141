import fs from 'node:fs';

export const DEFAULT_CONFIG = '/etc/bakker/bakker.yaml';

/** The config a command reads: the one given, else /etc/bakker/bakker.yaml when it exists. */
export function configFileOr(given: string | undefined): string | undefined {
  return given ?? (fs.existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : undefined);
}
