/** The test vDisk lives with the local runtime (npm start seeds it as the demo disk); tests use it from here. */
export * from '../../functions/local/boot-disk.js';
