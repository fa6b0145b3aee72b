import type { Contact, ListContactsResponse, SearchDirectoryResponse } from "./gen/wac.js";
import type { Requester } from "./requester.js";

export interface PageOptions {
  pageSize?: number;
  pageToken?: string;
}

/** wac.contacts: the subscriber's address book, and the shared directory. */
export class ContactsApi {
  constructor(private readonly request: Requester) {}

  /** One page of contacts, ordered by display name. */
  list(options: PageOptions = {}): Promise<ListContactsResponse> {
    return this.request("ContactsService.ListContacts", options);
  }

  /** Every contact, following the pages. */
  async all(): Promise<Contact[]> {
    const contacts: Contact[] = [];
    let pageToken: string | undefined;
    do {
      const page = await this.list({ pageSize: 1000, ...(pageToken ? { pageToken } : {}) });
      contacts.push(...(page.contacts ?? []));
      pageToken = page.nextPageToken || undefined;
    } while (pageToken);
    return contacts;
  }

  get(contactId: string): Promise<Contact> {
    return this.request("ContactsService.GetContact", { contactId });
  }

  create(contact: Contact): Promise<Contact> {
    return this.request("ContactsService.CreateContact", { contact });
  }

  /**
   * Changes a contact, identified by contact.contactId. `fields` names the
   * fields to change, in lowerCamelCase (e.g. ["displayName", "favorite"]);
   * without it every field that is set changes.
   */
  update(contact: Contact, fields?: string[]): Promise<Contact> {
    return this.request(
      "ContactsService.UpdateContact",
      fields?.length ? { contact, updateMask: fields.join(",") } : { contact },
    );
  }

  async delete(contactId: string): Promise<void> {
    await this.request("ContactsService.DeleteContact", { contactId });
  }

  /** Searches the directory by a prefix of a name, an e-mail address or a phone number. */
  search(query: string, options: PageOptions = {}): Promise<SearchDirectoryResponse> {
    return this.request("DirectoryService.SearchDirectory", { query, ...options });
  }
}
