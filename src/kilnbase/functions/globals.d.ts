// What a Kilnbase function may use without importing it (InsForge's self-hosted globals).
declare var module: { exports: any };
declare var exports: any;
declare function createClient(options?: Record<string, unknown>): any;
declare function encodeBase64(data: string | ArrayBuffer | Uint8Array): string;
declare function decodeBase64(b64: string): Uint8Array;
