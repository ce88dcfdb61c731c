// CommonJS dependencies that only some paths use, loaded at their first use through require:
// synchronously (the views are synchronous), and without the export-name scan Node makes when
// an ES module imports a CommonJS one (iced-x86's 0.9 MB source: ~45 ms of a command's start).
// A short-lived command such as `introvisor inspect` of a dump then pays for neither Ajv (no
// schema checked) nor iced-x86 (no dispatch switch in the kernel) unless it uses them.
import { createRequire } from 'node:module';
import type * as AjvModule from 'ajv';
import type * as IcedModule from 'iced-x86';

const require = createRequire(import.meta.url);

let ajvModule: typeof AjvModule | undefined;
let icedModule: typeof IcedModule | undefined;

/** Ajv's constructor, the package loaded at the first call. */
export function ajvClass(): typeof AjvModule.Ajv {
  ajvModule ??= require('ajv') as typeof AjvModule;
  return ajvModule.Ajv;
}

/** The iced-x86 decoder's module (its WebAssembly instantiated at the first call). */
export function icedX86(): typeof IcedModule {
  icedModule ??= require('iced-x86') as typeof IcedModule;
  return icedModule;
}
