/**
 * The classic-script build: the global `Wac` is the class itself, with the
 * rest of the API as its static members (Wac.WacError, Wac.Status,
 * Wac.newTraceparent).
 */
import { Wac } from "./wac.js";

export default Wac;
